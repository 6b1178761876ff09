//! A TCP proxy that can cut every connection through it, on demand, to test what services do
//! when the broker or the database goes away and comes back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// Forwards connections from a local port to `upstream` until cut.
///
/// `cut()` drops every open connection and refuses new ones (accepts and closes them at once,
/// as a dead peer looks to a client); `restore()` lets connections through again.
pub struct FaultProxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    live: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let up = Arc::new(AtomicBool::new(true));
        let live = Arc::new(Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(
            listener,
            upstream,
            up.clone(),
            live.clone(),
            stop.clone(),
        ));
        FaultProxy {
            addr,
            up,
            live,
            stop,
        }
    }

    /// Drops every connection and refuses new ones until `restore`.
    pub async fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        let mut live = self.live.lock().await;
        live.cancel();
        *live = CancellationToken::new();
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// Whether connections currently pass.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }

    /// A proxy in front of the server `url` names (`scheme://user:pass@host:port/...`), and
    /// the same URL pointing at the proxy instead.
    pub async fn in_front_of(url: &str) -> (FaultProxy, String) {
        let upstream = host_port(url);
        let address = tokio::net::lookup_host(&upstream)
            .await
            .ok()
            .and_then(|mut addresses| addresses.next())
            .unwrap_or_else(|| panic!("cannot resolve {upstream}"));
        let proxy = FaultProxy::start(address).await;
        let proxied = url.replacen(&upstream, &proxy.addr.to_string(), 1);
        (proxy, proxied)
    }
}

/// `host:port` of a URL.
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    rest.split(['/', '?']).next().unwrap_or_default().to_owned()
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Ok(live) = self.live.try_lock() {
            live.cancel();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    up: Arc<AtomicBool>,
    live: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((client, _)) = accepted else { continue };
        if !up.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let token = live.lock().await.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (mut client, mut server) = (client, server);
            tokio::select! {
                _ = token.cancelled() => {}
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn finds_host_and_port() {
        assert_eq!(
            host_port("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "127.0.0.1:5672"
        );
        assert_eq!(
            host_port("postgres://u@h:5432/db?sslmode=disable"),
            "h:5432"
        );
    }

    #[tokio::test]
    async fn forwards_then_cuts_then_restores() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = echo.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 || socket.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxy = FaultProxy::start(echo_addr).await;
        let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
        conn.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        conn.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hi");

        proxy.cut().await;
        let mut rest = Vec::new();
        // The cut connection reaches EOF (or errors) instead of hanging.
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            conn.read_to_end(&mut rest),
        )
        .await
        .expect("cut connection must close");

        proxy.restore();
        let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
        conn.write_all(b"ok").await.unwrap();
        conn.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ok");
    }
}
