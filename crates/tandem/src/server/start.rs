//! [`Server::start`]: the start sequence, and [`Running`], the started
//! server it returns. Each step below can fail, and none admits a
//! connection before every one has succeeded: the connection permits are
//! given last.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::warn;

#[cfg(feature = "admin")]
use super::admin::{Admin, Readiness};
use super::builder::Server;
use super::config::ServerConfig;
use super::error::ServerError;
use super::runtimes::Started;
use super::service::{Pending, ServiceContext};
use super::worker::Serving;
use super::{layout, limits};
use crate::compute::Compute;
use crate::handler::Handler;
use crate::metrics::Metrics;

/// A started server: accepting and serving until [`Running::wait`] sees its
/// shutdown future complete.
#[must_use = "a server that is not waited on is stopped at once when dropped"]
pub struct Running<H> {
    pub(super) config: ServerConfig,
    /// The caller's thread waits on this runtime; it has no threads of its
    /// own and serves no connection.
    pub(super) control: Runtime,
    pub(super) started: Started,
    pub(super) serving: Arc<Serving<H>>,
    #[cfg(feature = "admin")]
    pub(super) readiness: Readiness,
    /// Dropped after the serving runtimes, so that the drain stays
    /// observable.
    #[cfg(feature = "admin")]
    pub(super) admin: Option<Admin>,
    /// The UDP echo's address, if it runs.
    pub(super) udp_addr: Option<SocketAddr>,
    /// Cancelled when the shutdown begins: it stops the services.
    pub(super) services_stop: CancellationToken,
    /// Stopped after the serving runtimes, whose connections use it.
    pub(super) compute: Compute,
}

impl Server {
    /// Builds the layout's runtimes and starts accepting on `listener`.
    /// When this returns, connections are being served.
    ///
    /// Must not be called from inside a tokio runtime: the server's runtimes
    /// run on threads of their own, and the calling thread later waits in
    /// [`Running::wait`].
    pub fn start<H: Handler>(
        self,
        listener: TcpListener,
        handler: H,
    ) -> Result<Running<H>, ServerError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(ServerError::InsideRuntime);
        }
        let Server {
            config,
            #[cfg(feature = "admin")]
            admin,
            services,
            udp_addr,
            #[cfg(feature = "tls")]
            tls,
            compute,
        } = self;
        check(&config)?;
        let control = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|cause| ServerError::Runtime {
                role: "control".to_owned(),
                cause,
            })?;
        #[cfg(feature = "tls")]
        let serving = Arc::new(Serving::new(&config, handler, tls));
        #[cfg(not(feature = "tls"))]
        let serving = Arc::new(Serving::new(&config, handler));
        compute.report_to(&serving.metrics);
        crate::buffer::set_budget(
            config
                .buffer_memory
                .unwrap_or_else(crate::buffer::default_budget),
            config.workers,
        );
        // No permits until the layout has started: the limit is fitted to
        // the descriptors left once the runtimes have opened theirs.
        let limit = Arc::new(Semaphore::new(0));
        let started = layout::start(&config, listener, serving.clone(), limit.clone())?;
        // Untracked: it runs for as long as the serving runtimes do, and the
        // shutdown waits for connections, not for it.
        started.serving_handle().spawn(serving.sweep.clone().run());
        let services_stop = CancellationToken::new();
        start_services(&started, &serving, services, &services_stop)?;
        #[cfg(feature = "admin")]
        let readiness = Readiness::default();
        #[cfg(feature = "admin")]
        let admin = start_admin(admin, &started, &serving.metrics, &readiness)?;
        #[cfg(not(feature = "admin"))]
        start_ticks(&started, &serving.metrics);
        // Permits last: until now no connection could be accepted, so a
        // service or the admin endpoint that fails to start refuses none.
        let max_connections = limits::fit_connection_limit(config.max_connections);
        limit.add_permits(max_connections);
        serving.metrics.connection_limit(max_connections);
        #[cfg(feature = "admin")]
        readiness.accepting();
        Ok(Running {
            config,
            control,
            started,
            serving,
            #[cfg(feature = "admin")]
            readiness,
            #[cfg(feature = "admin")]
            admin,
            udp_addr,
            services_stop,
            compute,
        })
    }
}

/// The configuration's ranges, and a warning for what is allowed but
/// unsafe.
fn check(config: &ServerConfig) -> Result<(), ServerError> {
    config.validate()?;
    // The field stays in every build, so that one configuration type (and
    // file) serves them all; a build without the header reader refuses it
    // rather than serve a load balancer's header to the handler as data.
    #[cfg(not(feature = "proxy-protocol"))]
    if config.proxy_protocol.is_some() {
        return Err(ServerError::FeatureOff {
            field: "proxy_protocol",
            feature: "proxy-protocol",
        });
    }
    if config.proxy_protocol.is_some() && config.proxy_protocol_from.is_none() {
        warn!(
            "PROXY headers are read from any peer, so any client may set its own address; \
             name the load balancers with proxy_protocol_from (--proxy-protocol-from)"
        );
    }
    Ok(())
}

/// Starts each service on the serving runtime, inside it, so that what a
/// service registers belongs to its reactor.
fn start_services<H>(
    started: &Started,
    serving: &Serving<H>,
    services: Vec<Pending>,
    stop: &CancellationToken,
) -> Result<(), ServerError> {
    let handle = started.serving_handle().clone();
    let _entered = handle.enter();
    for service in services {
        let context = ServiceContext::new(stop.clone(), serving.metrics.clone());
        let task = (service.start)(context).map_err(|cause| ServerError::Service {
            name: service.name,
            cause,
        })?;
        // Tracked: the drain waits for it as for a connection.
        serving.tracker.spawn_on(task, &handle);
    }
    Ok(())
}

/// Starts the admin endpoint on `listener`, if there is one, and the
/// once-a-second sampling of the runtimes, which also folds the hand-off
/// waits into their histogram: on the admin runtime when there is one, so
/// that it keeps time while the workers are saturated, else on the serving
/// runtime (untracked, as the sweep).
#[cfg(feature = "admin")]
fn start_admin(
    listener: Option<TcpListener>,
    started: &Started,
    metrics: &Metrics,
    readiness: &Readiness,
) -> Result<Option<Admin>, ServerError> {
    let Some(listener) = listener else {
        start_ticks(started, metrics);
        return Ok(None);
    };
    Ok(Some(Admin::start(
        listener,
        metrics.clone(),
        readiness.clone(),
    )?))
}

/// The once-a-second work of the metrics, without an admin runtime to
/// run it: on the serving runtime, untracked, as the sweep.
fn start_ticks(started: &Started, metrics: &Metrics) {
    started
        .serving_handle()
        .spawn(metrics.clone().tick_every_second());
}

impl<H> Running<H> {
    /// The admin endpoint's address, if the server has one.
    #[cfg(feature = "admin")]
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(Admin::local_addr)
    }

    /// The address the UDP echo answers on, if it runs.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp_addr
    }

    /// The server's metrics, kept whether or not an admin endpoint serves
    /// them: what `Metrics::render` prints is what `/metrics` would.
    pub fn metrics(&self) -> &Metrics {
        &self.serving.metrics
    }
}
