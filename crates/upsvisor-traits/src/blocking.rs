//! Blocking work on a thread of its own, handed back as a future: how the
//! adapters make a blocking call (a socket, a serial port, an HTTP client)
//! awaitable under any executor, without an async runtime.

use std::future::Future;

/// Runs `f` on a new thread named `name` and returns a future of its
/// result.
///
/// The thread starts at once, before the future is first polled; dropping
/// the future does not stop it (it runs `f` to the end and its answer is
/// dropped), so `f` must bound its own running time (a deadline, a socket
/// timeout).
///
/// The future resolves to `Some(value)`, or to `None` when the thread ended
/// without an answer (`f` panicked). Errors: the operating system's error
/// when the thread cannot be started (resource limits); nothing has run
/// then.
///
/// Executor-agnostic: a std thread and a one-item queue that wakes the
/// future when the answer is in, or when the thread ends without one.
///
/// ```
/// let answer = upsvisor_traits::spawn_blocking("example", || 6 * 7).unwrap();
/// assert_eq!(futures::executor::block_on(answer), Some(42));
/// ```
pub fn spawn_blocking<T, F>(
    name: impl Into<String>,
    f: F,
) -> std::io::Result<impl Future<Output = Option<T>> + Send + 'static>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, mut rx) = crate::channel::bounded(1);
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            // A panic in `f` drops `tx` unsent: the future sees `None`.
            let _ = tx.try_send(f());
        })?;
    Ok(std::future::poll_fn(move |cx| rx.poll_recv(cx)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_on_a_named_thread() {
        let name = spawn_blocking("upsvisor-test", || {
            std::thread::current().name().map(str::to_owned)
        })
        .unwrap();
        assert_eq!(
            futures::executor::block_on(name),
            Some(Some("upsvisor-test".to_owned()))
        );
    }

    #[test]
    fn a_panic_is_no_answer() {
        let f = spawn_blocking("upsvisor-test", || -> u8 { panic!("boom") }).unwrap();
        assert_eq!(futures::executor::block_on(f), None);
    }

    #[test]
    fn runs_before_it_is_polled() {
        let (tx, rx) = std::sync::mpsc::channel();
        let f = spawn_blocking("upsvisor-test", move || tx.send(()).unwrap()).unwrap();
        rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        drop(f);
    }
}
