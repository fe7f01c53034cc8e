//! The `tandem` command line's own part: the options of `tandem serve`
//! (flags, environment, TOML file), merged, validated and resolved into the
//! library's [`ServerConfig`](tandem::ServerConfig) and
//! [`EchoConfig`](tandem::EchoConfig). A library target, so that the
//! binary's tests read the options from their one declaration; and the
//! start-up line, which states them.

pub mod config;
pub mod startup;
