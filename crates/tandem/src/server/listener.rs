//! The listening socket: built with socket2 so that the backlog, address
//! reuse, port sharing and the IPv6-only flag are set explicitly rather
//! than left to whatever `std` chooses, or inherited from a service manager
//! that opened it (systemd socket activation).

use std::net::{SocketAddr, TcpListener, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

use super::ServerError;

/// How a listener is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenOptions {
    /// Listen backlog (the kernel caps it at `net.core.somaxconn`).
    pub backlog: u32,
    /// `SO_REUSEPORT`: several processes (or listeners) bind the same
    /// address and port, and the kernel spreads new connections among them,
    /// by a hash of each connection's addresses and ports. Every one of them
    /// must set it, and on Linux they must run as the same user.
    pub reuse_port: bool,
}

/// Binds a non-blocking listener on `addr` with a listen backlog of
/// `backlog` (the kernel caps it at `net.core.somaxconn`).
///
/// `SO_REUSEADDR` lets a restarted server bind while old connections sit in
/// TIME_WAIT; an IPv6 address listens for IPv6 only, so that `[::]:8000` and
/// `0.0.0.0:8000` can be served by two processes, as with most servers.
pub fn bind(addr: SocketAddr, backlog: u32) -> Result<TcpListener, ServerError> {
    bind_with(
        addr,
        ListenOptions {
            backlog,
            reuse_port: false,
        },
    )
}

/// [`bind`], with every option of [`ListenOptions`].
pub fn bind_with(addr: SocketAddr, options: ListenOptions) -> Result<TcpListener, ServerError> {
    let ListenOptions {
        backlog,
        reuse_port,
    } = options;
    let listen_error = |cause| ServerError::Listen { addr, cause };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(listen_error)?;
    socket.set_reuse_address(true).map_err(listen_error)?;
    if reuse_port {
        socket.set_reuse_port(true).map_err(listen_error)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(listen_error)?;
    }
    socket.bind(&addr.into()).map_err(listen_error)?;
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    socket.listen(backlog).map_err(listen_error)?;
    socket.set_nonblocking(true).map_err(listen_error)?;
    Ok(socket.into())
}

/// The listening socket a service manager passed in (systemd socket
/// activation: `LISTEN_FDS`, `LISTEN_PID`, the first descriptor from 3 on),
/// made non-blocking; `None` when none was passed to this process.
///
/// The manager set its backlog and options (`Backlog=`, `ReusePort=` in the
/// `.socket` unit); a descriptor that is not a listening TCP socket is an
/// error.
#[cfg(feature = "systemd")]
pub fn inherited() -> Result<Option<TcpListener>, ServerError> {
    let mut passed = listenfd::ListenFd::from_env();
    if passed.len() == 0 {
        return Ok(None);
    }
    let refused = |cause| ServerError::Inherited { cause };
    let listener = passed
        .take_tcp_listener(0)
        .map_err(refused)?
        .ok_or_else(|| refused(std::io::Error::other("descriptor 3 was already taken")))?;
    // listenfd checks the family and type; listen(2) having been called is
    // what makes it a listener.
    let listening = Socket::from(listener.try_clone().map_err(refused)?)
        .is_listener()
        .map_err(refused)?;
    if !listening {
        return Err(refused(std::io::Error::other(
            "descriptor 3 is a TCP socket, but not listening",
        )));
    }
    listener.set_nonblocking(true).map_err(refused)?;
    Ok(Some(listener))
}

/// Binds a non-blocking UDP socket on `addr` (IPv6 only for an IPv6
/// address, as [`bind`] does), for [`Server::udp`](super::Server::udp).
pub fn bind_udp(addr: SocketAddr) -> Result<UdpSocket, ServerError> {
    let listen_error = |cause| ServerError::Listen { addr, cause };
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(listen_error)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(listen_error)?;
    }
    // One socket takes every client's datagrams, and what does not fit in
    // its receive buffer is dropped: 50 clients with a 16 KiB datagram each
    // in flight overflow the usual 208 KiB default. The kernel caps the
    // request at net.core.rmem_max; a smaller buffer is no reason to stop.
    if let Err(err) = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER) {
        tracing::debug!(cause = %err, "cannot enlarge the UDP receive buffer");
    }
    socket.bind(&addr.into()).map_err(listen_error)?;
    socket.set_nonblocking(true).map_err(listen_error)?;
    Ok(socket.into())
}

/// SO_RCVBUF asked for the UDP echo's socket.
const UDP_RECEIVE_BUFFER: usize = 4 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_udp_socket_gets_as_large_a_receive_buffer_as_the_kernel_allows() {
        let socket = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let got = socket2::SockRef::from(&socket).recv_buffer_size().unwrap();
        let cap = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|max| max.trim().parse::<usize>().ok())
            .unwrap_or(UDP_RECEIVE_BUFFER);
        // Linux doubles what it grants, for its own bookkeeping.
        assert!(
            got >= UDP_RECEIVE_BUFFER.min(cap),
            "SO_RCVBUF {got}, rmem_max {cap}"
        );
    }
}
