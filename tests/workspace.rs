//! The workspace's promises. To a server built on the library: depending on
//! `tandem` pulls in neither the command line nor the load generator, as
//! `cargo tree` resolves it from the lockfile, and with
//! `default-features = false` it weighs little more than tokio itself (see
//! [`lean`]). To a reader of any crate: no two files need each other, so
//! each file can be read, tested and moved after the files it imports (see
//! [`import_cycles`] for what counts).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Held by each test of this file that runs cargo or reads the sources, so
/// that the timed builds share the machine with nothing else of this file's:
/// a test that ran beside the longer of the two builds only would load one
/// and not the other.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn alone() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Crates of the command line, the load generator and the suite's report,
/// which a server built on the library must not compile.
const NOT_IN_THE_LIBRARY: [&str; 8] = [
    "clap",
    "toml",
    "plotters",
    "indicatif",
    "rcgen",
    "hdrhistogram",
    "prometheus-parse",
    "tandem-bench",
];

/// The crates `package` builds with, itself included: its normal
/// dependencies, as a dependent compiles them.
fn normal_tree(package: &str) -> BTreeSet<String> {
    let output = Command::new(env!("CARGO"))
        .args(["tree", "--locked", "--edges", "normal", "--prefix", "none"])
        .args(["--package", package])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        output.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_library_builds_without_the_command_line_or_the_load_generator() {
    let _alone = alone();
    let library = normal_tree("tandem");
    assert!(library.contains("tokio"), "{library:?}");
    for name in NOT_IN_THE_LIBRARY {
        assert!(
            !library.contains(name),
            "the library depends on {name}: {library:?}"
        );
    }
    // The same look at the binary finds them, so the check can see them.
    let binary = normal_tree("tandem-cli");
    for name in NOT_IN_THE_LIBRARY {
        assert!(binary.contains(name), "tandem-cli lacks {name}");
    }
}

/// Each crate of the workspace: its source folder and the root file of each
/// of its targets (the command line's binary is a crate of its own beside
/// its library).
const CRATES: [(&str, &[&str]); 3] = [
    ("crates/tandem/src", &["lib.rs"]),
    ("crates/tandem-bench/src", &["lib.rs"]),
    ("src", &["lib.rs", "main.rs"]),
];

#[test]
fn no_crate_of_the_workspace_has_an_import_cycle_between_its_files() {
    let _alone = alone();
    let mut cycles = String::new();
    for (folder, roots) in CRATES {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
        let mut read = BTreeSet::new();
        for root in roots {
            let tree = import_cycles::ModuleTree::read(&src, root)
                .unwrap_or_else(|error| panic!("read the modules of {folder}/{root}: {error}"));
            read.extend(tree.files());
            for cycle in tree.cycles() {
                writeln!(cycles, "in {folder}: {cycle}").expect("write to a String");
            }
        }
        // A file the check did not reach from a root would pass unread.
        let unread: Vec<_> = import_cycles::rust_files_under(&src)
            .into_iter()
            .filter(|file| !read.contains(file))
            .collect();
        assert!(
            unread.is_empty(),
            "{folder}: no `mod name;` from {roots:?} leads to {unread:?} \
             (a #[path] or a test-only module file is not followed)"
        );
    }
    assert!(
        cycles.is_empty(),
        "files that import each other; move what they share into a file that \
         imports neither (a leaf), or move the item to the file that uses it:\n{cycles}"
    );
}

#[test]
fn a_server_on_the_library_without_its_features_depends_on_at_most_45_crates() {
    let _alone = alone();
    let server = lean::Scratch::one_handler();
    let crates = server.crates();
    // The issue's measure: one handler on tokio alone, against 103 crates
    // with every feature (hyper, the Prometheus exporter, rustls and ring,
    // ppp, crc32c, listenfd). The count is the lockfile's resolution, the
    // same on every machine.
    assert!(crates.len() <= 45, "{} crates: {crates:?}", crates.len());
    for heavy in [
        "hyper",
        "metrics-exporter-prometheus",
        "rustls",
        "ppp",
        "listenfd",
    ] {
        assert!(
            !crates
                .iter()
                .any(|name| name.split(' ').next() == Some(heavy)),
            "{heavy} is built without its feature"
        );
    }
}

#[test]
fn a_server_on_the_library_without_its_features_compiles_in_at_most_twice_plain_tokios_work_and_serves_what_it_has()
 {
    let _alone = alone();
    let server = lean::Scratch::one_handler();
    let tokio = lean::Scratch::plain_tokio();
    // A clean build each, each in a target folder of its own, side by
    // side: whatever else loads the machine loads both. Twice, keeping
    // each one's least: a moment of load that falls on one build more than
    // the other inflates only that round.
    let (mut server_cost, mut tokio_cost) = (f64::MAX, f64::MAX);
    for _ in 0..2 {
        server.clean();
        tokio.clean();
        let (server_round, tokio_round) = std::thread::scope(|builds| {
            let server_build = builds.spawn(|| server.build());
            let tokio_cost = tokio.build();
            (server_build.join().expect("the server's build"), tokio_cost)
        });
        server_cost = server_cost.min(server_round);
        tokio_cost = tokio_cost.min(tokio_round);
    }
    assert!(server_cost > 0.0 && tokio_cost > 0.0, "no CPU time read");
    eprintln!("compile work: one handler {server_cost:.1} s, plain tokio {tokio_cost:.1} s");
    // Compile work is the CPU time of cargo and every rustc it ran, not
    // the wall time: the project judges speed with benchmarks, never with
    // timed assertions, and a busy machine stretches wall time with its
    // load where CPU time stays mostly the compiler's own work. Measured
    // by this test on the 2-core test machine while other work loaded it:
    // 19.7 to 26.3 s against 11.1 to 15.2 s, ratios of 1.73 to 1.87, the
    // issue's bound of 2 above them all; on a quiet machine, 18.4 s
    // against 11.5 s (1.60). Built one after the other, at a busier
    // moment for one than the other, the ratio reached 1.95: hence side
    // by side, and no other test of this file beside them. With every
    // feature the same server takes 54 to 57 s, 4.4 times tokio's or more.
    assert!(
        server_cost <= 2.0 * tokio_cost,
        "the server on the library took {server_cost:.1} s of CPU to compile, \
         plain tokio {tokio_cost:.1} s"
    );
    server.serves();
    server.refuses_the_proxy_header();
}

/// Scratch crates built beside the workspace: a server with one handler on
/// the library with `default-features = false`, and the same echo on plain
/// tokio, for the two figures of the library's weight.
mod lean {
    use std::collections::BTreeSet;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    /// A crate in a folder of its own, outside the workspace.
    pub struct Scratch {
        dir: tempfile::TempDir,
    }

    /// The workspace's root.
    fn root() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR"))
    }

    /// The workspace's tokio requirement, as the library takes it: the
    /// plain-tokio crate asks for the same features.
    fn tokio_requirement() -> String {
        let manifest = std::fs::read_to_string(root().join("Cargo.toml")).expect("read Cargo.toml");
        manifest
            .lines()
            .find(|line| line.starts_with("tokio = "))
            .expect("the workspace names tokio")
            .to_owned()
    }

    /// The library's example handler (`examples/uppercase/upper.rs`), and
    /// a main that serves it until stdin closes.
    const SERVER: &str = r#"
use std::io::{BufRead, Write};

use tandem::{Server, ServerConfig};

mod upper;

fn main() {
    if let Err(err) = serve() {
        eprintln!("{err}");
        std::process::exit(1);
    }
}

fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = ServerConfig::default();
    // Asks for the PROXY header, which this build leaves out.
    if std::env::args().any(|arg| arg == "proxy-protocol") {
        config.proxy_protocol = Some(std::time::Duration::from_secs(1));
    }
    let listener = tandem::server::bind("127.0.0.1:0".parse()?, 128)?;
    println!("{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    // Stops when stdin closes.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        for _ in std::io::stdin().lock().lines() {}
        let _ = stop.send(());
    });
    let report = Server::new(config).run(listener, upper::Upper, async move {
        let _ = stopped.await;
    })?;
    println!("drained {} cut {}", report.drained, report.cut);
    Ok(())
}
"#;

    const PLAIN_TOKIO: &str = r#"
use std::io::{BufRead, Write};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        for _ in std::io::stdin().lock().lines() {}
        let _ = stop.send(());
    });
    loop {
        tokio::select! {
            _ = &mut stopped => return Ok(()),
            accepted = listener.accept() => {
                let (mut socket, _) = accepted?;
                tokio::spawn(async move {
                    let mut buf = [0; 4096];
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 || socket.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        }
    }
}
"#;

    impl Scratch {
        /// One handler on the library, with none of its features: the
        /// library's example's.
        pub fn one_handler() -> Self {
            let library = root().join("crates/tandem");
            let dependency = format!(
                "tandem = {{ path = {:?}, default-features = false }}",
                library.display().to_string()
            );
            let scratch = Self::new("one-handler", &dependency, SERVER);
            let handler = library.join("examples/uppercase/upper.rs");
            std::fs::copy(handler, scratch.dir.path().join("src/upper.rs"))
                .expect("copy the example's handler");
            scratch
        }

        /// The same echo on tokio alone.
        pub fn plain_tokio() -> Self {
            Self::new("plain-tokio", "", PLAIN_TOKIO)
        }

        fn new(name: &str, dependency: &str, main: &str) -> Self {
            let dir = tempfile::tempdir().expect("a scratch folder");
            // `[workspace]`: a workspace of its own, not a stray member of
            // whatever encloses the temporary folder.
            let manifest = format!(
                "[package]\nname = {name:?}\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
                 [dependencies]\n{}\n{dependency}\n\n[workspace]\n",
                tokio_requirement()
            );
            std::fs::write(dir.path().join("Cargo.toml"), manifest).expect("write Cargo.toml");
            std::fs::create_dir(dir.path().join("src")).expect("create src");
            std::fs::write(dir.path().join("src/main.rs"), main).expect("write main.rs");
            // The workspace's lockfile: the versions its own builds and
            // tests use, every one of them in the local registry cache.
            std::fs::copy(root().join("Cargo.lock"), dir.path().join("Cargo.lock"))
                .expect("copy Cargo.lock");
            Scratch { dir }
        }

        /// A cargo command run in the crate, offline, with a target folder
        /// of its own whatever the environment names.
        fn cargo(&self) -> Command {
            let mut cargo = Command::new(env!("CARGO"));
            cargo
                .current_dir(self.dir.path())
                .env("CARGO_TARGET_DIR", self.target())
                .arg("--offline");
            cargo
        }

        fn target(&self) -> PathBuf {
            self.dir.path().join("target")
        }

        /// The crates it builds with, itself included, as `name version`:
        /// its normal dependencies, as `cargo tree` resolves them.
        pub fn crates(&self) -> BTreeSet<String> {
            let output = self
                .cargo()
                .args(["tree", "--edges", "normal", "--prefix", "none"])
                .output()
                .expect("run cargo tree");
            assert!(
                output.status.success(),
                "cargo tree: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(|line| line.split(' ').take(2).collect::<Vec<_>>().join(" "))
                .collect()
        }

        /// Removes what an earlier build left, so that the next is clean.
        pub fn clean(&self) {
            match std::fs::remove_dir_all(self.target()) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => panic!("remove {}: {err}", self.target().display()),
            }
        }

        /// Builds it from clean and returns the CPU seconds that took:
        /// cargo's and every compiler's it ran, user and system, as the
        /// shell's `times` reports its children.
        pub fn build(&self) -> f64 {
            let output = Command::new("sh")
                .arg("-c")
                .arg(r#""$0" build --offline --quiet; built=$?; times; exit $built"#)
                .arg(env!("CARGO"))
                .current_dir(self.dir.path())
                .env("CARGO_TARGET_DIR", self.target())
                .output()
                .expect("run sh");
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "cargo build: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            // `times` prints the shell's own times, then its children's.
            let children = stdout.lines().last().unwrap_or_default();
            children.split_whitespace().map(seconds).sum()
        }

        /// Runs what it built, has a line uppercased through it over
        /// loopback, and stops it by closing its stdin.
        pub fn serves(&self) {
            let binary = self.target().join("debug").join("one-handler");
            let mut server = Command::new(&binary)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("start the built server");
            let mut stdout = BufReader::new(server.stdout.take().expect("its stdout"));
            let mut addr = String::new();
            stdout.read_line(&mut addr).expect("read its address");
            let mut client = TcpStream::connect(addr.trim()).expect("connect over loopback");
            client.write_all(b"hello\n").expect("send a line");
            client
                .shutdown(std::net::Shutdown::Write)
                .expect("close the sending side");
            let mut echoed = String::new();
            client.read_to_string(&mut echoed).expect("read the echo");
            assert_eq!(echoed, "HELLO\n");
            drop(server.stdin.take());
            let deadline = Instant::now() + Duration::from_secs(60);
            let status = loop {
                if let Some(status) = server.try_wait().expect("wait for the server") {
                    break status;
                }
                if Instant::now() > deadline {
                    let _ = server.kill();
                    panic!("the server did not stop when its stdin closed");
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            let mut report = String::new();
            stdout.read_to_string(&mut report).expect("read its report");
            assert!(status.success(), "the server failed: {report}");
            assert_eq!(report, "drained 0 cut 0\n");
        }
    }

    impl Scratch {
        /// Runs what it built with a configuration that asks for the PROXY
        /// header: it must refuse to start, naming the feature, rather
        /// than hand a balancer's header to its handler as data.
        pub fn refuses_the_proxy_header(&self) {
            let binary = self.target().join("debug").join("one-handler");
            let output = Command::new(&binary)
                .arg("proxy-protocol")
                .stdin(Stdio::null())
                .output()
                .expect("start the built server");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(!output.status.success(), "it started: {stderr}");
            assert!(
                stderr.contains("proxy_protocol needs the `proxy-protocol` feature"),
                "{stderr}"
            );
        }
    }

    /// `1m2.5s` (as `times` writes a duration) in seconds.
    fn seconds(time: &str) -> f64 {
        let (minutes, rest) = time.split_once('m').unwrap_or(("0", time));
        let unreadable = |_| panic!("`times` wrote {time:?}");
        let minutes: f64 = minutes.parse().unwrap_or_else(unreadable);
        let seconds: f64 = rest
            .trim_end_matches('s')
            .parse()
            .unwrap_or_else(unreadable);
        minutes * 60.0 + seconds
    }
}

mod import_cycles {
    //! Import cycles between the files of one crate.
    //!
    //! A file depends on another when it names an item the other file
    //! defines, in a `use` or in its code, by any path that resolves inside
    //! the crate (from `crate`, `self`, `super`, or a child module's bare
    //! name, as a parent calls its parts). A
    //! cycle is two or more files that each reach the others through such
    //! dependencies: none of them can be read, tested or moved without the
    //! rest, which is what splitting them into files was for.
    //!
    //! Imports are followed to the file that defines the item, and a
    //! re-export (`pub use`, `pub(crate) use`) is no dependency of its own.
    //! A `mod.rs` that declares its children and re-exports their items is a
    //! facade: a child that names a sibling's item through it
    //! (`super::Sibling`) depends on the sibling, and the facade depends on
    //! nothing. Counting the facade would report a cycle for each such child
    //! and push authors to spell out the private paths the facade hides.
    //!
    //! Not counted: code compiled only for tests (`#[cfg(test)]` items and
    //! modules, since a test may reach anywhere), comments, string and
    //! character literals, and macro paths (`crate::name!`), since an
    //! exported macro lives at the crate root whichever file defines it.
    //!
    //! The reading is lexical, not a compiler's: a glob re-export
    //! (`pub use x::*`) is not followed, and a module written inline
    //! (`mod name { … }`) counts as part of its file. No crate of the
    //! workspace has either outside its tests.
    //!
    //! A path that starts at an imported name (`Error::Io`) counts through
    //! its `use`.

    use std::collections::{BTreeMap, BTreeSet};
    use std::fmt;
    use std::fs;
    use std::io;
    use std::path::{Path, PathBuf};

    /// A module's place in its crate: the names from the crate root down.
    type ModulePath = Vec<String>;

    /// How many imports a path may go through before the check gives up on
    /// it: more than any crate has, and a bound on `use a as b; use b as a;`.
    const MOST_HOPS: usize = 16;

    /// The `.rs` files under `src`, relative to it.
    pub fn rust_files_under(src: &Path) -> BTreeSet<PathBuf> {
        let mut files = BTreeSet::new();
        let mut folders = vec![src.to_path_buf()];
        while let Some(folder) = folders.pop() {
            let entries = fs::read_dir(&folder)
                .unwrap_or_else(|error| panic!("list {}: {error}", folder.display()));
            for entry in entries {
                let path = entry.expect("read a folder entry").path();
                if path.is_dir() {
                    folders.push(path);
                } else if path.extension().is_some_and(|extension| extension == "rs") {
                    let relative = path.strip_prefix(src).expect("a path under src");
                    files.insert(relative.to_path_buf());
                }
            }
        }
        files
    }

    /// The modules of one crate, as read from their files.
    pub struct ModuleTree {
        modules: BTreeMap<ModulePath, Module>,
    }

    /// What one file declares and names.
    struct Module {
        /// Relative to the crate's source folder.
        file: PathBuf,
        /// The modules it declares with `mod name;`.
        children: BTreeSet<String>,
        imports: Vec<Import>,
        /// The paths written in its code, outside `use` declarations.
        paths: Vec<Vec<String>>,
    }

    /// One leaf of a `use` tree: `use a::{b, c as d};` has two.
    struct Import {
        /// As written, from the first segment to the item.
        path: Vec<String>,
        /// The name it binds; none for a glob or `as _`.
        name: Option<String>,
        /// Whether it re-exports (any `pub`).
        public: bool,
    }

    /// Two or more files that each reach the others, and the dependencies
    /// between them.
    pub struct Cycle {
        files: Vec<PathBuf>,
        edges: Vec<Edge>,
    }

    struct Edge {
        from: PathBuf,
        to: PathBuf,
        /// The paths, as written in `from`, that name items of `to`.
        via: Vec<String>,
    }

    impl ModuleTree {
        /// Reads the crate whose root file is `src/root`, following its
        /// `mod name;` declarations as the compiler does.
        pub fn read(src: &Path, root: &str) -> io::Result<ModuleTree> {
            let mut modules = BTreeMap::new();
            let mut unread = vec![(ModulePath::new(), PathBuf::from(root))];
            while let Some((path, file)) = unread.pop() {
                let module = Module::read(src, file)?;
                for child in &module.children {
                    let child_file = child_file(src, &module.file, child)?;
                    let mut child_path = path.clone();
                    child_path.push(child.clone());
                    unread.push((child_path, child_file));
                }
                modules.insert(path, module);
            }
            Ok(ModuleTree { modules })
        }

        pub fn files(&self) -> impl Iterator<Item = PathBuf> + '_ {
            self.modules.values().map(|module| module.file.clone())
        }

        /// The cycles, each with the dependencies that close it.
        pub fn cycles(&self) -> Vec<Cycle> {
            let graph = self.dependencies();
            strongly_connected(&graph)
                .into_iter()
                .filter(|component| component.len() > 1)
                .map(|component| self.cycle(&graph, &component))
                .collect()
        }

        fn cycle(&self, graph: &Graph, component: &BTreeSet<ModulePath>) -> Cycle {
            let file = |module: &ModulePath| self.modules[module].file.clone();
            let mut edges = Vec::new();
            for from in component {
                for (to, via) in &graph[from] {
                    if component.contains(to) {
                        let via = via.clone();
                        edges.push(Edge {
                            from: file(from),
                            to: file(to),
                            via,
                        });
                    }
                }
            }
            let files = component.iter().map(file).collect();
            Cycle { files, edges }
        }

        /// For each module, the modules whose items it names and the paths
        /// it names them by. Re-exports are not dependencies: they are
        /// followed when another module names an item through them.
        fn dependencies(&self) -> Graph {
            let mut graph = Graph::new();
            for (from, module) in &self.modules {
                let imports = module.imports.iter().filter(|import| !import.public);
                let written = imports.map(|import| &import.path).chain(&module.paths);
                let mut targets: BTreeMap<ModulePath, Vec<String>> = BTreeMap::new();
                for path in written {
                    let Some(target) = self.target(from, path) else {
                        continue;
                    };
                    let via = targets.entry(target).or_default();
                    let path = path.join("::");
                    if !via.contains(&path) {
                        via.push(path);
                    }
                }
                targets.remove(from);
                graph.insert(from.clone(), targets);
            }
            graph
        }

        /// The module whose file defines what `path`, written in `module`,
        /// names; none if the path leaves the crate.
        fn target(&self, module: &[String], path: &[String]) -> Option<ModulePath> {
            let absolute = self.absolute(module, path, 0)?;
            self.definer(&absolute, 0)
        }

        /// `path`, written in `module`, spelt from the crate root; none if it
        /// starts outside the crate (`std::…`, another crate, a local type).
        fn absolute(&self, module: &[String], path: &[String], hops: usize) -> Option<ModulePath> {
            let (first, rest) = path.split_first()?;
            match first.as_str() {
                "crate" => Some(rest.to_vec()),
                "self" => Some([module, rest].concat()),
                "super" => {
                    let ups = path
                        .iter()
                        .take_while(|segment| *segment == "super")
                        .count();
                    let base = module.get(..module.len().checked_sub(ups)?)?;
                    Some([base, &path[ups..]].concat())
                }
                _ if self.modules[module].children.contains(first) => Some([module, path].concat()),
                _ if hops < MOST_HOPS => {
                    let import = self.modules[module].import(first)?;
                    let imported = self.absolute(module, &import.path, hops + 1)?;
                    Some([imported.as_slice(), rest].concat())
                }
                _ => None,
            }
        }

        /// The module that defines the item `absolute` names, following
        /// imports (re-exports and private ones alike, as name lookup does);
        /// the module itself if the path names a module.
        fn definer(&self, absolute: &[String], hops: usize) -> Option<ModulePath> {
            let depth = (0..=absolute.len())
                .rev()
                .find(|&depth| self.modules.contains_key(&absolute[..depth]))?;
            let (module, rest) = absolute.split_at(depth);
            if let Some((item, further)) = rest.split_first()
                && hops < MOST_HOPS
                && let Some(import) = self.modules[module].import(item)
                && let Some(imported) = self.absolute(module, &import.path, hops + 1)
            {
                return self.definer(&[imported.as_slice(), further].concat(), hops + 1);
            }
            Some(module.to_vec())
        }
    }

    impl Module {
        fn read(src: &Path, file: PathBuf) -> io::Result<Module> {
            let source = fs::read_to_string(src.join(&file))?;
            let tokens = without_tests(&tokens(&source));
            Ok(Module {
                file,
                children: declared_modules(&tokens),
                imports: imports(&tokens),
                paths: written_paths(&tokens),
            })
        }

        fn import(&self, name: &str) -> Option<&Import> {
            self.imports
                .iter()
                .find(|import| import.name.as_deref() == Some(name))
        }
    }

    /// Where the compiler looks for the file of module `name`, declared in
    /// `parent`: beside a `lib.rs`, `main.rs` or `mod.rs`, else in the
    /// folder named after the parent's file.
    fn child_file(src: &Path, parent: &Path, name: &str) -> io::Result<PathBuf> {
        let folder = match parent.file_name().and_then(|file| file.to_str()) {
            Some("lib.rs" | "main.rs" | "mod.rs") => parent.with_file_name(""),
            _ => parent.with_extension(""),
        };
        let candidates = [
            folder.join(format!("{name}.rs")),
            folder.join(name).join("mod.rs"),
        ];
        candidates
            .into_iter()
            .find(|candidate| src.join(candidate).is_file())
            .ok_or_else(|| {
                let message = format!("no file for `mod {name};` in {}", parent.display());
                io::Error::new(io::ErrorKind::NotFound, message)
            })
    }

    /// Each module's dependencies, with the paths that make each one.
    type Graph = BTreeMap<ModulePath, BTreeMap<ModulePath, Vec<String>>>;

    /// Tarjan's strongly connected components: the sets of modules that
    /// each reach all the others.
    fn strongly_connected(graph: &Graph) -> Vec<BTreeSet<ModulePath>> {
        let mut search = Tarjan {
            graph,
            next_index: 0,
            index: BTreeMap::new(),
            low_link: BTreeMap::new(),
            stack: Vec::new(),
            components: Vec::new(),
        };
        for module in graph.keys() {
            if !search.index.contains_key(module) {
                search.visit(module);
            }
        }
        search.components
    }

    struct Tarjan<'g> {
        graph: &'g Graph,
        next_index: usize,
        /// The order in which the search reached each module.
        index: BTreeMap<&'g ModulePath, usize>,
        /// The earliest module still on the stack that each one reaches.
        low_link: BTreeMap<&'g ModulePath, usize>,
        stack: Vec<&'g ModulePath>,
        components: Vec<BTreeSet<ModulePath>>,
    }

    impl<'g> Tarjan<'g> {
        fn visit(&mut self, module: &'g ModulePath) {
            self.index.insert(module, self.next_index);
            self.low_link.insert(module, self.next_index);
            self.next_index += 1;
            self.stack.push(module);
            for target in self.graph[module].keys() {
                let reached = match self.index.get(target) {
                    None => {
                        self.visit(target);
                        self.low_link[target]
                    }
                    Some(&index) if self.stack.contains(&target) => index,
                    Some(_) => continue,
                };
                let low = self.low_link[module].min(reached);
                self.low_link.insert(module, low);
            }
            if self.low_link[module] == self.index[module] {
                self.pop_component(module);
            }
        }

        fn pop_component(&mut self, root: &ModulePath) {
            let mut component = BTreeSet::new();
            while let Some(module) = self.stack.pop() {
                component.insert(module.clone());
                if module == root {
                    break;
                }
            }
            self.components.push(component);
        }
    }

    impl fmt::Display for Cycle {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let files: Vec<_> = self
                .files
                .iter()
                .map(|file| file.display().to_string())
                .collect();
            writeln!(f, "cycle between {}", files.join(", "))?;
            for edge in &self.edges {
                let (from, to) = (edge.from.display(), edge.to.display());
                writeln!(f, "    {from} -> {to} via {}", edge.via.join(", "))?;
            }
            Ok(())
        }
    }

    /// A token of Rust source, once comments and literals are gone: all the
    /// check needs to see paths, `use` trees, `mod` and attributes.
    #[derive(Clone, Debug, PartialEq)]
    enum Token {
        Word(String),
        PathSeparator,
        Punct(char),
    }

    fn word(token: Option<&Token>) -> Option<&str> {
        match token {
            Some(Token::Word(word)) => Some(word),
            _ => None,
        }
    }

    fn tokens(source: &str) -> Vec<Token> {
        let mut lexer = Lexer {
            chars: source.chars().collect(),
            at: 0,
            tokens: Vec::new(),
        };
        lexer.run();
        lexer.tokens
    }

    /// Splits source into tokens, dropping comments, strings, characters and
    /// lifetimes, so that a path in a doc comment or a message is no import.
    struct Lexer {
        chars: Vec<char>,
        at: usize,
        tokens: Vec<Token>,
    }

    impl Lexer {
        fn peek(&self, ahead: usize) -> Option<char> {
            self.chars.get(self.at + ahead).copied()
        }

        fn run(&mut self) {
            while let Some(next) = self.peek(0) {
                match (next, self.peek(1)) {
                    ('/', Some('/')) => self.skip_line(),
                    ('/', Some('*')) => self.skip_block_comment(),
                    ('"', _) => self.skip_string(),
                    ('\'', _) => self.skip_character_or_lifetime(),
                    (':', Some(':')) => {
                        self.at += 2;
                        self.tokens.push(Token::PathSeparator);
                    }
                    (next, _) if next == '_' || next.is_alphanumeric() => self.word(),
                    (next, _) if next.is_whitespace() => self.at += 1,
                    (next, _) => {
                        self.at += 1;
                        self.tokens.push(Token::Punct(next));
                    }
                }
            }
        }

        fn skip_line(&mut self) {
            while self.peek(0).is_some_and(|next| next != '\n') {
                self.at += 1;
            }
        }

        /// Block comments nest in Rust.
        fn skip_block_comment(&mut self) {
            let mut depth = 0;
            while let Some(next) = self.peek(0) {
                match (next, self.peek(1)) {
                    ('/', Some('*')) => {
                        depth += 1;
                        self.at += 2;
                    }
                    ('*', Some('/')) => {
                        depth -= 1;
                        self.at += 2;
                        if depth == 0 {
                            return;
                        }
                    }
                    _ => self.at += 1,
                }
            }
        }

        /// From the opening quote to the closing one, over escapes.
        fn skip_string(&mut self) {
            self.at += 1;
            while let Some(next) = self.peek(0) {
                self.at += 1;
                match next {
                    '\\' => self.at += 1,
                    '"' => return,
                    _ => {}
                }
            }
        }

        /// From the `#`s or quote after `r` to the quote followed by as many
        /// `#`s; a raw string has no escapes.
        fn skip_raw_string(&mut self) {
            let mut hashes = 0;
            while self.peek(0) == Some('#') {
                hashes += 1;
                self.at += 1;
            }
            self.at += 1;
            while let Some(next) = self.peek(0) {
                self.at += 1;
                if next == '"' && (0..hashes).all(|ahead| self.peek(ahead) == Some('#')) {
                    self.at += hashes;
                    return;
                }
            }
        }

        /// `'x'` and `'\n'` are characters; `'a` (a lifetime or a label)
        /// has no closing quote, and its name lexes as a harmless word.
        fn skip_character_or_lifetime(&mut self) {
            match (self.peek(1), self.peek(2)) {
                (Some('\\'), _) => {
                    self.at += 3;
                    while let Some(next) = self.peek(0) {
                        self.at += 1;
                        if next == '\'' {
                            return;
                        }
                    }
                }
                (Some(_), Some('\'')) => self.at += 3,
                _ => self.at += 1,
            }
        }

        /// A word, unless it is the prefix of a literal (`b"…"`, `r#"…"#`,
        /// `b'x'`) or of a raw identifier (`r#type`).
        fn word(&mut self) {
            let start = self.at;
            while self
                .peek(0)
                .is_some_and(|next| next == '_' || next.is_alphanumeric())
            {
                self.at += 1;
            }
            let word: String = self.chars[start..self.at].iter().collect();
            let raw_string_follows = {
                let hashes = (0..)
                    .take_while(|&ahead| self.peek(ahead) == Some('#'))
                    .count();
                self.peek(hashes) == Some('"')
            };
            match (word.as_str(), self.peek(0)) {
                ("r" | "br" | "cr", _) if raw_string_follows => self.skip_raw_string(),
                ("b" | "c", Some('"')) => self.skip_string(),
                ("b", Some('\'')) => self.skip_character_or_lifetime(),
                ("r", Some('#')) => self.at += 1,
                _ => self.tokens.push(Token::Word(word)),
            }
        }
    }

    /// The tokens without the items compiled only for tests.
    fn without_tests(tokens: &[Token]) -> Vec<Token> {
        let mut kept = Vec::with_capacity(tokens.len());
        let mut at = 0;
        while at < tokens.len() {
            if is_cfg_test(&tokens[at..]) {
                at = end_of_item(tokens, at);
            } else {
                kept.push(tokens[at].clone());
                at += 1;
            }
        }
        kept
    }

    fn is_cfg_test(tokens: &[Token]) -> bool {
        use Token::{Punct, Word};
        matches!(
            tokens,
            [Punct('#'), Punct('['), Word(cfg), Punct('('), Word(test), Punct(')'), Punct(']'), ..]
                if cfg == "cfg" && test == "test"
        )
    }

    /// Where the item starting at `start` (with its attributes) ends: after
    /// its `;` or its closing brace, or before the brace that closes what
    /// holds it (an attribute on a field or an arm).
    fn end_of_item(tokens: &[Token], start: usize) -> usize {
        let mut depth = 0usize;
        for (at, token) in tokens.iter().enumerate().skip(start) {
            match token {
                Token::Punct('(' | '[' | '{') => depth += 1,
                Token::Punct(')' | ']' | '}') if depth == 0 => return at,
                Token::Punct('}') if depth == 1 => return at + 1,
                Token::Punct(')' | ']' | '}') => depth -= 1,
                Token::Punct(';') if depth == 0 => return at + 1,
                _ => {}
            }
        }
        tokens.len()
    }

    /// The names of `mod name;` declarations (a `mod name { … }` is part of
    /// its file).
    fn declared_modules(tokens: &[Token]) -> BTreeSet<String> {
        tokens
            .windows(3)
            .filter_map(|window| match window {
                [Token::Word(keyword), Token::Word(name), Token::Punct(';')]
                    if keyword == "mod" =>
                {
                    Some(name.clone())
                }
                _ => None,
            })
            .collect()
    }

    /// The leaves of every `use` tree.
    fn imports(tokens: &[Token]) -> Vec<Import> {
        let mut imports = Vec::new();
        for (at, _) in tokens
            .iter()
            .enumerate()
            .filter(|(_, token)| word(Some(token)) == Some("use"))
        {
            let public = is_public(tokens, at);
            let mut leaves = Vec::new();
            // `use<'a>` in a return type captures lifetimes: no tree, skipped.
            if use_tree(tokens, &mut (at + 1), Vec::new(), &mut leaves).is_some() {
                imports.extend(leaves.into_iter().map(|(path, name)| Import {
                    path,
                    name,
                    public,
                }));
            }
        }
        imports
    }

    /// Whether the `use` at `at` is preceded by `pub` or `pub(…)`.
    fn is_public(tokens: &[Token], at: usize) -> bool {
        let before = &tokens[..at];
        match before.last() {
            Some(Token::Punct(')')) => {
                let open = before.iter().rposition(|token| *token == Token::Punct('('));
                open.is_some_and(|open| open > 0 && word(before.get(open - 1)) == Some("pub"))
            }
            last => word(last) == Some("pub"),
        }
    }

    /// Reads one `use` tree from `at`, adding each leaf's path and bound
    /// name to `leaves`; none if the tokens are not a tree.
    fn use_tree(
        tokens: &[Token],
        at: &mut usize,
        mut path: Vec<String>,
        leaves: &mut Vec<(Vec<String>, Option<String>)>,
    ) -> Option<()> {
        loop {
            let token = tokens.get(*at)?;
            *at += 1;
            match token {
                // A leading `::` names another crate; the marker keeps it out.
                Token::PathSeparator => path.push("::".to_owned()),
                Token::Punct('*') => {
                    path.push("*".to_owned());
                    leaves.push((path, None));
                    return Some(());
                }
                Token::Punct('{') => return use_tree_list(tokens, at, &path, leaves),
                Token::Word(segment) => {
                    path.push(segment.clone());
                    if tokens.get(*at) == Some(&Token::PathSeparator) {
                        *at += 1;
                        continue;
                    }
                    let name = bound_name(tokens, at, &mut path);
                    leaves.push((path, name));
                    return Some(());
                }
                Token::Punct(_) => return None,
            }
        }
    }

    /// The trees of `{a, b::c, …}` after its opening brace, each under `prefix`.
    fn use_tree_list(
        tokens: &[Token],
        at: &mut usize,
        prefix: &[String],
        leaves: &mut Vec<(Vec<String>, Option<String>)>,
    ) -> Option<()> {
        loop {
            if tokens.get(*at)? == &Token::Punct('}') {
                *at += 1;
                return Some(());
            }
            use_tree(tokens, at, prefix.to_vec(), leaves)?;
            match tokens.get(*at)? {
                Token::Punct(',') => *at += 1,
                Token::Punct('}') => {}
                _ => return None,
            }
        }
    }

    /// The name a leaf binds: its `as` name, else its last segment; a
    /// trailing `self` binds the module before it.
    fn bound_name(tokens: &[Token], at: &mut usize, path: &mut Vec<String>) -> Option<String> {
        if path.last().is_some_and(|last| last == "self") {
            path.pop();
        }
        if word(tokens.get(*at)) == Some("as") {
            let alias = word(tokens.get(*at + 1))?.to_owned();
            *at += 2;
            return (alias != "_").then_some(alias);
        }
        path.last().cloned()
    }

    /// The paths of two or more segments written outside `use` trees and
    /// macro names, each from its first segment.
    fn written_paths(tokens: &[Token]) -> Vec<Vec<String>> {
        let mut paths = Vec::new();
        let mut at = 0;
        while at < tokens.len() {
            // `use<'a>` in a return type captures lifetimes: no tree.
            if word(tokens.get(at)) == Some("use") && tokens.get(at + 1) != Some(&Token::Punct('<'))
            {
                at = skip_past_semicolon(tokens, at);
                continue;
            }
            let starts_a_path = tokens.get(at + 1) == Some(&Token::PathSeparator)
                && (at == 0 || tokens[at - 1] != Token::PathSeparator);
            let Some(first) = word(tokens.get(at)).filter(|_| starts_a_path) else {
                at += 1;
                continue;
            };
            let mut path = vec![first.to_owned()];
            at += 1;
            while tokens.get(at) == Some(&Token::PathSeparator)
                && let Some(segment) = word(tokens.get(at + 1))
            {
                path.push(segment.to_owned());
                at += 2;
            }
            let is_macro = tokens.get(at) == Some(&Token::Punct('!'));
            if path.len() > 1 && !is_macro {
                paths.push(path);
            }
        }
        paths
    }

    fn skip_past_semicolon(tokens: &[Token], at: usize) -> usize {
        tokens[at..]
            .iter()
            .position(|token| *token == Token::Punct(';'))
            .map_or(tokens.len(), |offset| at + offset + 1)
    }

    /// A crate written to a temporary folder, `(path, source)` per file.
    fn synthetic_crate(files: &[(&str, &str)]) -> tempfile::TempDir {
        let src = tempfile::tempdir().expect("a temporary folder");
        for (path, source) in files {
            let path = src.path().join(path);
            fs::create_dir_all(path.parent().expect("a file in a folder"))
                .expect("create a folder");
            fs::write(path, source).expect("write a source file");
        }
        src
    }

    fn cycles_of(files: &[(&str, &str)]) -> Vec<String> {
        let src = synthetic_crate(files);
        let tree = ModuleTree::read(src.path(), "lib.rs").expect("read the synthetic crate");
        tree.cycles().iter().map(ToString::to_string).collect()
    }

    /// `a` imports `X` under the name the root re-exports it by, which the
    /// check follows to `b`; `b` names `Y` in its code.
    #[test]
    fn two_files_that_name_each_others_items_are_a_cycle_even_through_a_reexport() {
        let cycles = cycles_of(&[
            ("lib.rs", "mod a;\nmod b;\npub use b::X as Exported;\n"),
            ("a.rs", "use crate::{Exported as X};\npub struct Y(X);\n"),
            (
                "b.rs",
                "pub struct X;\npub fn y() -> crate::a::Y { todo!() }\n",
            ),
        ]);
        assert_eq!(
            cycles,
            ["cycle between a.rs, b.rs\n    \
              a.rs -> b.rs via crate::Exported\n    \
              b.rs -> a.rs via crate::a::Y\n"]
        );
    }

    /// `facade/mod.rs` re-exports its children and holds a limit; `one`
    /// reads the limit and names `Two` through the facade; `two.rs` names
    /// `One` only in a comment, a string and its tests. Counting the
    /// re-exports, or reading the comment, the string or the tests, would
    /// each close a cycle.
    #[test]
    fn a_facade_that_reexports_a_child_which_uses_a_sibling_through_it_is_no_cycle() {
        let cycles = cycles_of(&[
            ("lib.rs", "mod facade;\npub use facade::{One, Two};\n"),
            (
                "facade/mod.rs",
                "mod one;\nmod two;\n\
                 pub use self::one::One;\n\
                 pub(crate) use self::two::Two;\n\
                 pub const LIMIT: usize = 1;\n",
            ),
            (
                "facade/one.rs",
                "use super::{LIMIT, Two};\npub struct One([Two; LIMIT]);\n",
            ),
            (
                "facade/two.rs",
                "/// Not a [`crate::One`], nor /* super::one::One */ either.\n\
                 pub struct Two;\n\
                 const NAME: &str = \"super::one::One\";\n\
                 #[cfg(test)]\n\
                 mod tests {\n    use crate::facade::One;\n}\n",
            ),
        ]);
        assert!(cycles.is_empty(), "{cycles:?}");
    }
}
