//! When to reconnect: exponential backoff with jitter, reset by a successful
//! connection.

use super::config::ClientConfig;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use std::time::Duration;

/// The reconnection schedule of one subscription.
#[derive(Debug)]
pub(crate) struct Reconnect {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
    failures: u32,
}

impl Reconnect {
    pub(crate) fn new(config: &ClientConfig) -> Self {
        let mut builder = ExponentialBuilder::new()
            .with_factor(2.0)
            .with_min_delay(config.initial_delay)
            .with_max_delay(config.max_delay.max(config.initial_delay));
        builder = match config.max_retries {
            Some(retries) => builder.with_max_times(retries as usize),
            None => builder.without_max_times(),
        };
        if config.jitter {
            builder = builder.with_jitter();
        }
        Self::from_builder(builder)
    }

    fn from_builder(builder: ExponentialBuilder) -> Self {
        Self {
            builder,
            delays: builder.build(),
            failures: 0,
        }
    }

    /// A connection failed: how long to wait before the next attempt, and
    /// which attempt it is (from 1), or `None` to give up.
    pub(crate) fn next_delay(&mut self) -> Option<(u32, Duration)> {
        let delay = self.delays.next()?;
        self.failures = self.failures.saturating_add(1);
        Some((self.failures, delay))
    }

    /// How many reconnection attempts were made since the last success.
    pub(crate) fn attempts(&self) -> u32 {
        self.failures
    }

    /// The first delay of the schedule (the initial delay, with jitter when
    /// configured), without counting an attempt: the wait before reopening
    /// a response that ended normally but brought nothing.
    pub(crate) fn initial_delay(&self) -> Duration {
        self.builder
            .without_max_times()
            .build()
            .next()
            .unwrap_or_default()
    }

    /// A connection succeeded: the next failure starts from the initial delay.
    pub(crate) fn reset(&mut self) {
        self.delays = self.builder.build();
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn config() -> ClientConfig {
        ClientConfig::default()
            .initial_delay(ms(100))
            .max_delay(ms(1000))
            .jitter(false)
    }

    #[test]
    fn delays_double_up_to_the_maximum() {
        let mut reconnect = Reconnect::new(&config());
        // backon computes in f32: compare whole milliseconds.
        let delays: Vec<_> = (0..7)
            .filter_map(|_| reconnect.next_delay())
            .map(|(attempt, delay)| (attempt, delay.as_millis()))
            .collect();
        assert_eq!(
            delays,
            [
                (1, 100),
                (2, 200),
                (3, 400),
                (4, 800),
                (5, 1000),
                (6, 1000),
                (7, 1000)
            ]
        );
    }

    #[test]
    fn a_success_resets_the_schedule() {
        let mut reconnect = Reconnect::new(&config());
        reconnect.next_delay();
        reconnect.next_delay();
        assert_eq!(reconnect.attempts(), 2);
        reconnect.reset();
        assert_eq!(reconnect.attempts(), 0);
        assert_eq!(reconnect.next_delay(), Some((1, ms(100))));
    }

    #[test]
    fn gives_up_after_max_retries_in_a_row() {
        let mut reconnect = Reconnect::new(&config().max_retries(Some(2)));
        assert!(reconnect.next_delay().is_some());
        assert!(reconnect.next_delay().is_some());
        assert_eq!(reconnect.next_delay(), None);
        assert_eq!(reconnect.attempts(), 2);
        reconnect.reset();
        assert!(reconnect.next_delay().is_some());

        let mut never = Reconnect::new(&config().max_retries(Some(0)));
        assert_eq!(never.next_delay(), None);
    }

    #[test]
    fn unlimited_retries_never_give_up() {
        let mut reconnect = Reconnect::new(&config());
        assert!((0..10_000).all(|_| reconnect.next_delay().is_some()));
        assert_eq!(
            reconnect.next_delay().map(|(_, delay)| delay),
            Some(ms(1000))
        );
    }

    #[test]
    fn jitter_stays_within_one_extra_delay() {
        let builder = ExponentialBuilder::new()
            .with_min_delay(ms(100))
            .with_max_delay(ms(1000))
            .without_max_times()
            .with_jitter()
            .with_jitter_seed(7);
        let mut reconnect = Reconnect::from_builder(builder);
        let bases = [100, 200, 400, 800, 1000, 1000];
        for base in bases {
            let (_, delay) = reconnect.next_delay().unwrap_or_default();
            assert!(
                delay >= ms(base) && delay < ms(2 * base),
                "{delay:?} for {base}"
            );
        }
        let mut with_config = Reconnect::new(&ClientConfig::default());
        let first = with_config.next_delay().map(|(_, delay)| delay);
        assert!(first.is_some_and(|delay| delay >= ms(250) && delay < ms(500)));
    }
}
