//! Free loopback ports.
//!
//! Binding port 0 and handing the number to another process is racy (someone
//! else may take it in between), so every caller retries its start with a new
//! port when the server reports the port taken.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use crate::TestkitError;

/// A currently free TCP port on 127.0.0.1. Racy by nature: whoever uses it
/// must retry with a new one if it was taken meanwhile.
pub fn free_port() -> Result<u16, TestkitError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(TestkitError::io("bind 127.0.0.1:0"))?;
    let port = listener.local_addr().map_err(TestkitError::io("local_addr"))?.port();
    Ok(port)
}

/// A free port `p` such that `p + 1` is free too (OpenBao's dev server also
/// binds its cluster port at `p + 1`).
pub(crate) fn free_port_pair() -> Result<u16, TestkitError> {
    for _ in 0..50 {
        let port = free_port()?;
        if port < u16::MAX && TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port + 1))).is_ok() {
            return Ok(port);
        }
    }
    Err(TestkitError::failed("finding two adjacent free ports", "none found in 50 tries"))
}

/// How many times a server start is retried with a fresh port.
pub(crate) const START_ATTEMPTS: usize = 5;
