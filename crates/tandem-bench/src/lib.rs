//! The load generator and the comparison suite of tandem.
//!
//! - [`bench`](mod@bench): the load generator (`tandem bench`): closed
//!   loop, open loop without coordinated omission, churn, TLS and UDP;
//!   every echoed byte checked.
//! - [`suite`]: the comparison suite (`tandem suite`): tandem's layouts, the
//!   epoll reference (`examples/epoll_echo.rs`) and the peers of
//!   `bench/peers/` over a matrix of loads, with a markdown report and
//!   plots.
//!
//! Both drive servers from outside, over sockets; they use the `tandem`
//! library only for its transports (the TLS client shares its stream type),
//! its PEM reader and its limits.

pub mod bench;
pub mod suite;
