//! The one polling loop behind every wait of a deploy: the standby's
//! readiness, the public address reporting the new colour, another run's
//! lock. Time comes from tokio, so the unit tests run it on a paused clock.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// What one look at the world found.
pub enum Check<T> {
    /// Done: stop waiting with this value.
    Ready(T),
    /// Will never become ready (the container exited): stop with this reason.
    Failed(String),
    /// Not yet; the reason is kept for the timeout message.
    Pending(String),
}

/// Why a wait ended without a value.
#[derive(Debug, PartialEq, Eq)]
pub enum WaitError {
    Failed(String),
    /// The timeout passed; the last `Pending` reason.
    TimedOut(String),
}

/// Calls `check` every `interval` until it is ready or failed, or until
/// `timeout` has passed (checked at least once, and once more at the end).
pub async fn poll_until<T, F, Fut>(
    timeout: Duration,
    interval: Duration,
    mut check: F,
) -> Result<T, WaitError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Check<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Check::Ready(value) => return Ok(value),
            Check::Failed(why) => return Err(WaitError::Failed(why)),
            Check::Pending(why) if Instant::now() >= deadline => {
                return Err(WaitError::TimedOut(why));
            }
            Check::Pending(_) => {
                let next = (Instant::now() + interval).min(deadline);
                tokio::time::sleep_until(next).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[tokio::test(start_paused = true)]
    async fn ready_on_the_third_look_takes_two_intervals() {
        let looks = Cell::new(0);
        let started = Instant::now();
        let value = poll_until(Duration::from_secs(5), Duration::from_millis(50), || {
            looks.set(looks.get() + 1);
            let n = looks.get();
            async move {
                if n == 3 {
                    Check::Ready(n)
                } else {
                    Check::Pending("starting".into())
                }
            }
        })
        .await;
        assert_eq!(value, Ok(3));
        assert_eq!(started.elapsed(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_ends_exactly_at_the_deadline_with_the_last_reason() {
        let looks = Cell::new(0);
        let started = Instant::now();
        let result: Result<(), _> = poll_until(
            Duration::from_millis(1000),
            Duration::from_millis(300),
            || {
                looks.set(looks.get() + 1);
                let n = looks.get();
                async move { Check::Pending(format!("look {n}")) }
            },
        )
        .await;
        // Looks at 0, 300, 600, 900 and the deadline, 1000 ms.
        assert_eq!(result, Err(WaitError::TimedOut("look 5".into())));
        assert_eq!(started.elapsed(), Duration::from_millis(1000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_stops_at_once() {
        let started = Instant::now();
        let result: Result<(), _> = poll_until(
            Duration::from_secs(30),
            Duration::from_millis(50),
            || async { Check::Failed("exited (code 1)".into()) },
        )
        .await;
        assert_eq!(result, Err(WaitError::Failed("exited (code 1)".into())));
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
