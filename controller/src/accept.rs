//! Accept loops that a flood cannot take down: a bound on the connections served at
//! once (while it is full the loop stops accepting, so the kernel's backlog holds the
//! rest and a slow client only delays itself), a pause that grows while accepting
//! fails (out of file descriptors, accept would otherwise spin), and those failures
//! logged at most once a minute with a count. Each handler gets one deadline from the
//! caller for its whole request, never one per read.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clustermgr_protocol::throttle::Throttle;
use tokio::sync::Semaphore;

/// The first pause after a failed accept; it doubles up to [`MAX_PAUSE`].
const MIN_PAUSE: Duration = Duration::from_millis(10);
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// How often a repeated accept failure is logged.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// A listening socket.
pub trait Listener: Send + 'static {
    /// One accepted connection.
    type Conn: Send + 'static;
    /// Waits for the next connection.
    fn accept_one(&self) -> impl Future<Output = io::Result<Self::Conn>> + Send;
}

impl Listener for tokio::net::TcpListener {
    type Conn = tokio::net::TcpStream;
    async fn accept_one(&self) -> io::Result<Self::Conn> {
        self.accept().await.map(|(c, _)| c)
    }
}

impl Listener for tokio::net::UnixListener {
    type Conn = tokio::net::UnixStream;
    async fn accept_one(&self) -> io::Result<Self::Conn> {
        self.accept().await.map(|(c, _)| c)
    }
}

/// Accepts on `listener` forever, serving at most `max` connections at once, each
/// by its own task running `handle`. `what` names the listener in the log.
pub async fn serve_bounded<L, F, Fut>(listener: L, max: usize, what: &'static str, handle: F)
where
    L: Listener,
    F: Fn(L::Conn) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max));
    let mut pause = MIN_PAUSE;
    let mut failures = Throttle::new(LOG_EVERY);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept_one().await {
            Ok(conn) => {
                pause = MIN_PAUSE;
                let served = handle(conn);
                tokio::spawn(async move {
                    served.await;
                    drop(slot);
                });
            }
            Err(e) => {
                if let Some(earlier) = failures.admit(Instant::now()) {
                    tracing::warn!(
                        "accepting a {what} connection failed: {e} ({earlier} more failures since the last such line); pausing {} ms",
                        pause.as_millis()
                    );
                }
                drop(slot);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn slow_clients_fill_the_slots_and_the_next_waits_for_one() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = served.clone();
        tokio::spawn(serve_bounded(
            listener,
            2,
            "test",
            move |mut c: tokio::net::TcpStream| {
                let count = count.clone();
                async move {
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let mut b = [0u8; 1];
                    let _ = c.read(&mut b).await;
                    let _ = c.write_all(b"bye").await;
                }
            },
        ));
        // Two clients that never send hold both slots.
        let slow: Vec<_> = futures_connect(addr, 2).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while served.load(std::sync::atomic::Ordering::SeqCst) < 2 {
            assert!(Instant::now() < deadline, "the two were never served");
            tokio::task::yield_now().await;
        }
        // A third connects (the kernel's backlog) but is not served ...
        let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 2);
        // ... until a slot is free.
        drop(slow);
        third.write_all(b"x").await.unwrap();
        let mut reply = String::new();
        tokio::time::timeout(Duration::from_secs(5), third.read_to_string(&mut reply))
            .await
            .expect("served once a slot was free")
            .unwrap();
        assert_eq!(reply, "bye");
    }

    async fn futures_connect(addr: std::net::SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        out
    }
}
