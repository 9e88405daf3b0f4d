//! Accept loops that a flood cannot take down. Both bound the connections served at
//! once: `serve_bounded` (serve's CLI socket, whose connections may rightly last) by
//! not accepting while full, so newcomers wait in the kernel's backlog;
//! `serve_newest` (the Prometheus listener, whose genuine requests take a moment) by
//! dropping the oldest for each newcomer, so slow clients cannot keep a scrape out.
//! Both pause more and more while accepting fails (out of file descriptors, accept
//! would otherwise spin) and log those failures at most once a minute with a count
//! ([`Counted`], which serve's CLI handler uses for bad requests too).
//! Each handler gets one deadline from the caller for its whole request, never one
//! per read.

use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clustermgr_protocol::throttle::Throttle;
use tokio::sync::Semaphore;

/// The first pause after a failed accept; it doubles up to [`MAX_PAUSE`].
const MIN_PAUSE: Duration = Duration::from_millis(10);
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// How often a repeated accept failure is logged.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// A listening socket, or a test's stand-in for one (whose accepts fail on cue).
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
/// by its own task running `handle`. `what` names the listener in the log. For
/// connections that may rightly last (a CLI's `logs -f`): a new one waits for a slot.
pub async fn serve_bounded<L, F, Fut>(listener: L, max: usize, what: &'static str, handle: F)
where
    L: Listener,
    F: Fn(L::Conn) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max));
    let mut failed = AcceptFailures::new(what);
    let log = failed.log.clone();
    log.flushing(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            match listener.accept_one().await {
                Ok(conn) => {
                    failed.reset();
                    let served = handle(conn);
                    tokio::spawn(async move {
                        served.await;
                        drop(slot);
                    });
                }
                Err(e) => failed.pause(&e).await,
            }
        }
    })
    .await
}

/// Like [`serve_bounded`], for requests that take a moment when genuine (a scrape):
/// it never stops accepting, and when `max` are being served the oldest is dropped for
/// the newcomer. A slow client then holds a slot only until `max` others came after
/// it, so a flood of them cannot keep a genuine request waiting behind it, or in the
/// kernel's backlog while its SYNs are dropped.
pub async fn serve_newest<L, F, Fut>(listener: L, max: usize, what: &'static str, handle: F)
where
    L: Listener,
    F: Fn(L::Conn) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut serving: std::collections::VecDeque<tokio::task::AbortHandle> = Default::default();
    let mut failed = AcceptFailures::new(what);
    let log = failed.log.clone();
    log.flushing(async move {
        loop {
            match listener.accept_one().await {
                Ok(conn) => {
                    failed.reset();
                    serving.retain(|t| !t.is_finished());
                    if serving.len() >= max
                        && let Some(oldest) = serving.pop_front()
                    {
                        oldest.abort();
                    }
                    serving.push_back(tokio::spawn(handle(conn)).abort_handle());
                }
                Err(e) => failed.pause(&e).await,
            }
        }
    })
    .await
}

/// A listener's failed accepts: a pause that grows while they go on, and a line
/// logged at most once a minute with a count.
struct AcceptFailures {
    what: &'static str,
    pause: Duration,
    log: Arc<Counted>,
}

impl AcceptFailures {
    fn new(what: &'static str) -> Self {
        AcceptFailures {
            what,
            pause: MIN_PAUSE,
            log: Arc::new(Counted::new(
                LOG_EVERY,
                format!("failed accepts on the {what} listener"),
            )),
        }
    }

    fn reset(&mut self) {
        self.pause = MIN_PAUSE;
    }

    async fn pause(&mut self, e: &io::Error) {
        if let Some(earlier) = self.log.admit() {
            tracing::warn!(
                "accepting a {} connection failed: {e} ({earlier} more failures since the last such line); pausing {} ms",
                self.what,
                self.pause.as_millis()
            );
        }
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(MAX_PAUSE);
    }
}

/// Events anyone who reaches a listener can repeat at will (a failed accept, a bad
/// request): the caller logs the first, the rest of the interval are only counted, and
/// while [`Counted::flushing`] runs, their count is written once the interval is
/// over, also when nothing follows: a short burst is told at its end, not left for
/// whenever the next event comes.
pub struct Counted {
    throttle: Mutex<Throttle>,
    every: Duration,
    /// What is counted, in the plural ("failed accepts on the CLI listener").
    what: String,
}

impl Counted {
    /// At most one line per `every` about `what`.
    pub fn new(every: Duration, what: String) -> Self {
        Counted {
            throttle: Mutex::new(Throttle::new(every)),
            every,
            what,
        }
    }

    /// One more event: `Some(n)` when the caller is to log it, `n` being how many were
    /// counted since the last line; `None` when it is only counted.
    pub fn admit(&self) -> Option<u64> {
        self.lock().admit(now())
    }

    /// Runs `work`, writing the count of the events not logged at the end of each
    /// interval that had some.
    pub async fn flushing<T>(&self, work: impl Future<Output = T>) -> T {
        // A few looks per interval, so a count is written soon after its interval ends.
        let mut tick = tokio::time::interval(self.every / 6);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(work);
        loop {
            tokio::select! {
                done = &mut work => return done,
                _ = tick.tick() => {
                    let flushed = self.lock().flush(now());
                    if let Some(n) = flushed {
                        tracing::info!("{n} more {} since the last such line", self.what);
                    }
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Throttle> {
        self.throttle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The runtime's clock, which pauses and timeouts sleep on too (virtual in tests).
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

#[cfg(test)]
pub(crate) async fn assert_dropped_while_trickling(
    served: impl Future<Output = ()>,
    mut w: impl tokio::io::AsyncWrite + Unpin,
    bytes: &[u8],
    deadline: Duration,
) {
    use tokio::io::AsyncWriteExt;
    let start = tokio::time::Instant::now();
    let trickle = async {
        for b in bytes {
            if w.write_all(std::slice::from_ref(b)).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    tokio::select! {
        _ = served => {}
        _ = trickle => panic!("still read after {:?} of trickling", start.elapsed()),
    }
    let held = start.elapsed();
    assert!(
        held >= deadline - Duration::from_millis(100) && held < Duration::from_secs(8),
        "the trickling client was held {held:?}, its deadline being {deadline:?}"
    );
}

#[cfg(test)]
/// What `tracing` writes on this thread while the guard lives.
pub(crate) fn capture_log() -> (
    Arc<std::sync::Mutex<Vec<u8>>>,
    tracing::subscriber::DefaultGuard,
) {
    struct Into(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Into {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let buf = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || Into(sink.clone()))
        .finish();
    (buf, tracing::subscriber::set_default(subscriber))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
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

    #[tokio::test]
    async fn with_newest_first_a_flood_of_slow_clients_never_keeps_a_genuine_one_waiting() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_newest(
            listener,
            4,
            "test",
            |mut c: tokio::net::TcpStream| async move {
                let mut b = [0u8; 1];
                if c.read(&mut b).await.is_ok_and(|n| n == 1) {
                    let _ = c.write_all(b"bye").await;
                }
            },
        ));
        // Far more slow clients than slots, all held open.
        let _slow = futures_connect(addr, 200).await;
        let mut genuine = tokio::net::TcpStream::connect(addr).await.unwrap();
        genuine.write_all(b"x").await.unwrap();
        let mut reply = String::new();
        tokio::time::timeout(Duration::from_secs(2), genuine.read_to_string(&mut reply))
            .await
            .expect("answered at once, not after the slow ones")
            .unwrap();
        assert_eq!(reply, "bye");
    }

    /// A stand-in listener: its accepts fail with EMFILE (out of file descriptors) or
    /// succeed as `script` says, then wait forever; it records when each was asked.
    struct Scripted {
        script: std::sync::Mutex<std::collections::VecDeque<bool>>,
        asked: Arc<std::sync::Mutex<Vec<tokio::time::Instant>>>,
        done: tokio::sync::mpsc::UnboundedSender<()>,
    }

    impl Listener for Scripted {
        type Conn = ();
        async fn accept_one(&self) -> io::Result<()> {
            self.asked.lock().unwrap().push(tokio::time::Instant::now());
            let next = self.script.lock().unwrap().pop_front();
            match next {
                Some(true) => Ok(()),
                Some(false) => Err(io::Error::from_raw_os_error(libc::EMFILE)),
                None => {
                    let _ = self.done.send(());
                    std::future::pending().await
                }
            }
        }
    }

    /// Runs `serve` (one of the two loops) on a [`Scripted`] listener until the script
    /// is used up; returns when each accept was asked, how many connections were
    /// served, and what was logged.
    async fn run_script(script: &[bool], newest: bool) -> (Vec<Duration>, usize, String) {
        let (log, _guard) = capture_log();
        let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
        let listener = Scripted {
            script: std::sync::Mutex::new(script.iter().copied().collect()),
            asked: asked.clone(),
            done,
        };
        let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let task = tokio::spawn(serve(newest, listener, served.clone()));
        finished.recv().await.unwrap();
        // Let whatever the loop does after its last accept happen.
        tokio::time::sleep(Duration::from_secs(300)).await;
        task.abort();
        let asked = asked.lock().unwrap();
        let gaps = asked.windows(2).map(|w| w[1] - w[0]).collect();
        let log = String::from_utf8(log.lock().unwrap().clone()).unwrap();
        (gaps, served.load(std::sync::atomic::Ordering::SeqCst), log)
    }

    /// Runs [`serve_newest`] when `newest`, else [`serve_bounded`], counting what
    /// they serve.
    fn serve(
        newest: bool,
        l: Scripted,
        served: Arc<std::sync::atomic::AtomicUsize>,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
        let handle = move |()| {
            served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async {}
        };
        if newest {
            Box::pin(serve_newest(l, 4, "test", handle))
        } else {
            Box::pin(serve_bounded(l, 4, "test", handle))
        }
    }

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn a_failing_accept_pauses_longer_each_time_up_to_a_second_and_serving_resumes() {
        for newest in [false, true] {
            // Twelve failures, a connection, three more failures, a connection.
            let mut script = vec![false; 12];
            script.push(true);
            script.extend([false, false, false, true]);
            let (gaps, served, _) = run_script(&script, newest).await;
            let ms: Vec<u128> = gaps.iter().map(Duration::as_millis).collect();
            // Each failure pauses twice the one before, up to a second; an accept that
            // succeeds starts again from the shortest, and is served.
            assert_eq!(
                ms,
                [
                    10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000, 1000, 1000, 0, 10, 20, 40, 0
                ],
                "the pauses between accepts"
            );
            assert_eq!(served, 2, "both connections were served");
            assert!(gaps.iter().all(|g| *g <= MAX_PAUSE + MS));
        }
    }

    /// The log's lines about failed accepts, and how many failures each counts: the
    /// one that tells a failure counts it and those before it, a summary those it says.
    fn failure_lines(log: &str) -> Vec<u64> {
        let number = |t: Option<&str>| t.and_then(|n| n.parse::<u64>().ok());
        log.lines()
            .filter_map(|l| {
                if l.contains("accepting a test connection failed") {
                    number(l.rsplit('(').next().and_then(|c| c.split(' ').next())).map(|n| n + 1)
                } else if let Some((head, _)) =
                    l.split_once(" more failed accepts on the test listener")
                {
                    number(head.rsplit(' ').next())
                } else {
                    None
                }
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn accepts_failing_for_minutes_are_one_line_a_minute_with_their_count() {
        for newest in [false, true] {
            // About 200 s of failures at the longest pause.
            let (_, _, log) = run_script(&[false; 200], newest).await;
            let lines = failure_lines(&log);
            // One as the first happens, then one a minute (and the last minute's at its
            // end): each failure counted once.
            assert!((4..=5).contains(&lines.len()), "{log}");
            assert_eq!(lines.iter().sum::<u64>(), 200, "{log}");
            assert!(log.contains("Too many open files"), "{log}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_burst_of_failed_accepts_is_counted_in_a_line_at_its_intervals_end() {
        for newest in [false, true] {
            // Five failures in a fraction of a second, then nothing.
            let (_, _, log) = run_script(&[false; 5], newest).await;
            // The first as it happens, the other four once their minute is over.
            assert_eq!(failure_lines(&log), [1, 4], "{log}");
        }
    }

    async fn futures_connect(addr: std::net::SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        out
    }
}
