//! `<binary> healthcheck`: asks the service running in the same container whether it is ready.
//!
//! The runtime images are distroless (no shell, no curl), so a container engine's healthcheck
//! (Compose's `healthcheck: test: [CMD, /usr/local/bin/payments-api, healthcheck]`) runs the
//! service's own binary in this mode: one `GET /readyz` on 127.0.0.1 at the service's port,
//! exit 0 on `200`, 1 otherwise, bounded by a timeout so a hung service counts as unhealthy.

use std::process::ExitCode;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The argument that selects this mode: `payments-api healthcheck`.
pub const ARG: &str = "healthcheck";

/// Longer than any readiness answer, shorter than Compose's default healthcheck timeout (30 s).
const TIMEOUT: Duration = Duration::from_secs(5);

/// True when the binary was started as `<binary> healthcheck`.
pub fn requested() -> bool {
    std::env::args().nth(1).as_deref() == Some(ARG)
}

/// Probes `/readyz` on `port` and reports the result as the process' exit code.
pub async fn run(name: &str, port: u16) -> ExitCode {
    match tokio::time::timeout(TIMEOUT, ready_status(port)).await {
        Ok(Ok(200)) => ExitCode::SUCCESS,
        Ok(Ok(status)) => {
            eprintln!("{name}: /readyz on port {port} answered {status}");
            ExitCode::FAILURE
        }
        Ok(Err(error)) => {
            eprintln!("{name}: /readyz on port {port}: {error}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("{name}: /readyz on port {port} did not answer within {TIMEOUT:?}");
            ExitCode::FAILURE
        }
    }
}

/// The HTTP status of one `GET /readyz`.
async fn ready_status(port: u16) -> Result<u16, Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::get("/readyz")
        .header(hyper::header::HOST, format!("127.0.0.1:{port}"))
        .body(Empty::<Bytes>::new())?;
    Ok(sender.send_request(request).await?.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A one-request server answering with `status_line`.
    async fn answer_once(status_line: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let read = socket.read(&mut request).await.unwrap();
            assert!(request[..read].starts_with(b"GET /readyz HTTP/1.1\r\n"));
            let response = format!("HTTP/1.1 {status_line}\r\ncontent-length: 0\r\n\r\n");
            socket.write_all(response.as_bytes()).await.unwrap();
        });
        port
    }

    #[tokio::test]
    async fn ready_is_success() {
        let port = answer_once("200 OK").await;
        assert_eq!(run("test", port).await, ExitCode::SUCCESS);
    }

    #[tokio::test]
    async fn not_ready_is_failure() {
        let port = answer_once("503 Service Unavailable").await;
        assert_eq!(run("test", port).await, ExitCode::FAILURE);
    }

    #[tokio::test]
    async fn nothing_listening_is_failure() {
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // The listener is dropped: the port refuses connections.
        assert_eq!(run("test", port).await, ExitCode::FAILURE);
    }
}
