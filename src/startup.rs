//! The start-up line of `tandem serve`: one INFO event, logged before the
//! first connection is served, that states what the server runs with.
//!
//! Its fields are the serialization of the resolved options
//! ([`ServeConfig::options`]: flags over environment over file over the
//! library's defaults), each under its key, and beside them what the
//! options came to: the addresses a name resolved to, those bound, the
//! TLS identity. No option is named here, so an option declared in
//! [`ServeOptions`](crate::config::ServeOptions) is on the line as soon as
//! it is declared; a test holds every flag to a field.
//!
//! In the text format each field reads `key=value`; in JSON it is a member
//! of the event's `fields`, a number or a boolean where the option is one.
//!
//! This module states; it never binds, resolves or serves.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Once, OnceLock};

use serde::Serialize;
use serde_json::{Map, Value};
use tracing_core::callsite::{Callsite, Identifier};
use tracing_core::field::{FieldSet, Value as Recorded, display};
use tracing_core::metadata::Kind;
use tracing_core::subscriber::Interest;
use tracing_core::{Event, Level, Metadata};

use crate::config::{ServeConfig, serve_command, stated_default};

/// The line's message, which operators and tests look for.
pub const MESSAGE: &str = "tandem serve starting";

/// The line's target: the binary's, as when the binary logged it itself,
/// so that a `RUST_LOG` directive for `tandem` still covers it.
const TARGET: &str = "tandem";

/// What the options came to once resolved and bound, beside them on the
/// line.
#[derive(Serialize)]
struct Outcome<'a> {
    /// Every address `--listen` stands for, in the order they are tried.
    listen_resolved: String,
    /// The address bound, its port chosen.
    listening_on: SocketAddr,
    /// The admin endpoint's address bound, its port chosen; none without
    /// one.
    admin_listening_on: Option<SocketAddr>,
    /// TLS on or off, and within how long a handshake must finish.
    tls: String,
    /// The TLS files. The options leave paths out of their serialization
    /// (a path need not be UTF-8, and the layers merge as JSON), so they
    /// are stated here, any bytes that are not UTF-8 replaced.
    tls_cert: Option<Cow<'a, str>>,
    tls_key: Option<Cow<'a, str>>,
}

/// The fields of the start-up line, in the order of their keys (related
/// options share a prefix, and so sit together).
#[derive(Debug, Clone, PartialEq)]
pub struct StartupLine {
    fields: Map<String, Value>,
}

/// A field's value as the line records it.
#[derive(Debug, Clone, PartialEq)]
pub enum Stated {
    /// A boolean option.
    Bool(bool),
    /// A count, size or rate.
    Unsigned(u64),
    /// A negative number (no option takes one today).
    Signed(i64),
    /// A fraction (no option takes one today).
    Float(f64),
    /// Anything written as text: an address, a duration, a name.
    Text(String),
}

impl StartupLine {
    /// The line of a server resolved as `config` and bound to
    /// `listening_on`, and to `admin_listening_on` if it serves the admin
    /// endpoint.
    pub fn new(
        config: &ServeConfig,
        listening_on: SocketAddr,
        admin_listening_on: Option<SocketAddr>,
    ) -> Result<StartupLine, serde_json::Error> {
        let options = &config.options;
        let outcome = Outcome {
            listen_resolved: config
                .listen_resolved
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            listening_on,
            admin_listening_on,
            tls: config.tls.as_ref().map_or("off".to_owned(), |tls| {
                format!(
                    "on, handshake within {}",
                    humantime::format_duration(tls.handshake_timeout())
                )
            }),
            tls_cert: options.tls_cert.as_deref().map(Path::to_string_lossy),
            tls_key: options.tls_key.as_deref().map(Path::to_string_lossy),
        };
        let mut fields = as_map(serde_json::to_value(options)?)?;
        fields.extend(as_map(serde_json::to_value(outcome)?)?);
        Ok(StartupLine { fields })
    }

    /// Each field as the line records it. An option left unset, which is
    /// off unless asked for, reads as its help states its default (`off`,
    /// `any peer`).
    pub fn fields(&self) -> Vec<(&str, Stated)> {
        let command = serve_command();
        let unset = |key: &str| {
            command
                .get_arguments()
                .find(|arg| arg.get_long() == Some(key.replace('_', "-").as_str()))
                .and_then(stated_default)
                .unwrap_or_else(|| "off".to_owned())
        };
        self.fields
            .iter()
            .map(|(key, value)| {
                let stated = match value {
                    Value::Null => Stated::Text(unset(key)),
                    Value::Bool(truth) => Stated::Bool(*truth),
                    Value::Number(number) => number
                        .as_u64()
                        .map(Stated::Unsigned)
                        .or_else(|| number.as_i64().map(Stated::Signed))
                        .or_else(|| number.as_f64().map(Stated::Float))
                        .unwrap_or_else(|| Stated::Text(number.to_string())),
                    Value::String(text) => Stated::Text(text.clone()),
                    other => Stated::Text(other.to_string()),
                };
                (key.as_str(), stated)
            })
            .collect()
    }

    /// Logs the line at INFO, each field under its key.
    pub fn log(&self) {
        let fields = self.fields();
        let metadata = named_metadata(fields.iter().map(|(key, _)| *key));
        // Text unquoted (`listen=127.0.0.1:8000`), as `%` writes it in
        // tracing's macros; numbers and booleans as such.
        let recorded: Vec<(&str, Box<dyn Recorded + '_>)> = fields
            .iter()
            .map(|(key, stated)| {
                let value: Box<dyn Recorded> = match stated {
                    Stated::Bool(truth) => Box::new(*truth),
                    Stated::Unsigned(number) => Box::new(*number),
                    Stated::Signed(number) => Box::new(*number),
                    Stated::Float(number) => Box::new(*number),
                    Stated::Text(text) => Box::new(display(text)),
                };
                (*key, value)
            })
            .collect();
        let message = display(MESSAGE);
        let values: Vec<Option<&dyn Recorded>> = metadata
            .fields()
            .iter()
            .map(|field| match field.name() {
                "message" => Some(&message as &dyn Recorded),
                name => recorded
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| value as &dyn Recorded),
            })
            .collect();
        // One value a field, in the fields' order: what tracing's macros
        // build for an event (`value_set_all`, which they expand to).
        let values = metadata.fields().value_set_all(&values);
        tracing_core::dispatcher::get_default(|dispatch| {
            if dispatch.enabled(metadata) {
                dispatch.event(&Event::new(metadata, &values));
            }
        });
    }
}

/// A serialized struct's fields.
fn as_map(value: Value) -> Result<Map<String, Value>, serde_json::Error> {
    match value {
        Value::Object(fields) => Ok(fields),
        other => Err(serde::ser::Error::custom(format!(
            "not a set of fields: {other}"
        ))),
    }
}

/// The line's callsite. tracing's macros make an event's callsite where
/// its fields are named in the source; this line's fields are the options'
/// keys, known from their serialization, so its callsite is made the first
/// time it is logged (once a process, its names kept for the process's
/// life) and holds the line's metadata from then on.
struct LineCallsite(OnceLock<Metadata<'static>>);

static CALLSITE: LineCallsite = LineCallsite(OnceLock::new());

/// The line's metadata, its fields named `keys` (after the message) the
/// first time, and the callsite registered then.
fn named_metadata<'a>(keys: impl Iterator<Item = &'a str>) -> &'static Metadata<'static> {
    let metadata = CALLSITE.0.get_or_init(|| {
        let names: Vec<&'static str> = std::iter::once("message")
            .chain(keys.map(|key| &*Box::leak(Box::from(key))))
            .collect();
        line_metadata(FieldSet::new(
            Box::leak(names.into_boxed_slice()),
            Identifier(&CALLSITE),
        ))
    });
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| tracing_core::callsite::register(&CALLSITE));
    metadata
}

/// The callsite's metadata before the line is first logged: its message
/// alone.
static BARE: Metadata<'static> = line_metadata(FieldSet::new(&["message"], Identifier(&CALLSITE)));

const fn line_metadata(fields: FieldSet) -> Metadata<'static> {
    Metadata::new(
        MESSAGE,
        TARGET,
        Level::INFO,
        Some(file!()),
        Some(line!()),
        Some(module_path!()),
        fields,
        Kind::EVENT,
    )
}

impl Callsite for LineCallsite {
    /// Whether the line is wanted is asked each time it is logged (once),
    /// so no interest is kept.
    fn set_interest(&self, _: Interest) {}

    fn metadata(&self) -> &Metadata<'_> {
        self.0.get().unwrap_or(&BARE)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::config::ServeOptions;

    fn line_of(options: ServeOptions) -> StartupLine {
        let config = options.resolve().unwrap();
        StartupLine::new(&config, "127.0.0.1:8000".parse().unwrap(), None).unwrap()
    }

    fn field<'a>(fields: &'a [(&str, Stated)], key: &str) -> &'a Stated {
        &fields
            .iter()
            .find(|(name, _)| *name == key)
            .unwrap_or_else(|| panic!("no field {key} in {fields:?}"))
            .1
    }

    #[test]
    fn every_option_of_serve_is_a_field_of_the_startup_line() {
        let line = line_of(ServeOptions::default());
        let fields = line.fields();
        let missing: Vec<String> = serve_command()
            .get_arguments()
            .filter_map(|arg| arg.get_long())
            // Which file the options came from, not how the server runs.
            .filter(|long| *long != "config")
            .map(|long| long.replace('-', "_"))
            .filter(|key| !fields.iter().any(|(name, _)| name == key))
            .collect();
        assert!(missing.is_empty(), "missing {missing:?} from {fields:?}");
    }

    #[test]
    fn each_option_is_stated_as_the_server_resolved_it() {
        let line = line_of(ServeOptions {
            workers: Some(3),
            idle_timeout: Some("90s".parse().unwrap()),
            nodelay: Some(false),
            ..ServeOptions::default()
        });
        let fields = line.fields();
        assert_eq!(field(&fields, "workers"), &Stated::Unsigned(3));
        assert_eq!(
            field(&fields, "idle_timeout"),
            &Stated::Text("1m 30s".into())
        );
        assert_eq!(field(&fields, "nodelay"), &Stated::Bool(false));
        // Not set: the library's default.
        assert_eq!(field(&fields, "handoff_capacity"), &Stated::Unsigned(4000));
        assert_eq!(
            field(&fields, "listen"),
            &Stated::Text("127.0.0.1:8000".into())
        );
    }

    #[test]
    fn an_option_off_until_asked_for_reads_as_its_help_states_it() {
        let line = line_of(ServeOptions::default());
        let fields = line.fields();
        assert_eq!(field(&fields, "admin_listen"), &Stated::Text("off".into()));
        assert_eq!(
            field(&fields, "admin_listening_on"),
            &Stated::Text("off".into())
        );
        assert_eq!(
            field(&fields, "proxy_protocol_from"),
            &Stated::Text("any peer".into())
        );
        assert_eq!(field(&fields, "tls"), &Stated::Text("off".into()));
    }

    /// A log writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(json: bool) -> String {
        let captured = Captured::default();
        let sink = captured.clone();
        let layer = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || sink.clone());
        let line = line_of(ServeOptions {
            workers: Some(3),
            ..ServeOptions::default()
        });
        if json {
            tracing::subscriber::with_default(layer.json().finish(), || line.log());
        } else {
            tracing::subscriber::with_default(layer.finish(), || line.log());
        }
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn in_text_each_field_reads_key_equals_value() {
        let text = logged(false);
        assert!(
            text.contains(" INFO tandem: tandem serve starting "),
            "{text}"
        );
        let words: Vec<&str> = text.split_whitespace().collect();
        for pair in [
            "workers=3",
            "listen=127.0.0.1:8000",
            "nodelay=true",
            "admin_listen=off",
        ] {
            assert!(words.contains(&pair), "{pair}: {text}");
        }
    }

    #[test]
    fn in_json_each_field_is_a_member_of_fields() {
        let text = logged(true);
        let event: Value = serde_json::from_str(text.trim()).unwrap();
        let fields = &event["fields"];
        assert_eq!(fields["message"], MESSAGE, "{text}");
        assert_eq!(fields["workers"], 3, "{text}");
        assert_eq!(fields["nodelay"], true, "{text}");
        assert_eq!(fields["listening_on"], "127.0.0.1:8000", "{text}");
        assert_eq!(event["target"], "tandem", "{text}");
    }
}
