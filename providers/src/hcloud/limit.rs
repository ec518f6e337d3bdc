//! The project's rate limit, as the API reports it in `RateLimit-Limit`, `RateLimit-Remaining`
//! and `RateLimit-Reset` (a UNIX time: when the budget is full again; it refills evenly until
//! then, one request a second for Hetzner's 3600 an hour). While plenty remains, requests go out
//! at once. When few remain, they are spaced by the refill interval, so kz slows down to what the
//! budget gives back instead of running into `429 rate_limit_exceeded`.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;

/// Below this many remaining requests, requests are spaced.
pub const LOW: u64 = 10;

/// The widest gap kept between two requests, and the longest any one request waits for its slot:
/// requests queued behind each other take slots a gap apart, but none further than this from the
/// moment it asks (so waits do not add up past it).
const MAX_SPACING: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct State {
    limit: Option<u64>,
    remaining: Option<u64>,
    /// UNIX seconds.
    reset: Option<u64>,
    /// When the last request started (or will start, once its wait is over).
    last: Option<Instant>,
}

/// The rate limit of one project (one token), shared by every request made with it.
#[derive(Debug, Default)]
pub struct RateLimiter {
    state: Mutex<State>,
}

/// The gap to keep between requests: none while at least [`LOW`] remain; else the time the
/// budget takes to give one request back (`until_reset / (limit - remaining)`), or without a
/// known limit the time left shared among what remains; at most a minute.
pub fn spacing(limit: Option<u64>, remaining: u64, until_reset: Duration) -> Duration {
    if remaining >= LOW || until_reset.is_zero() {
        return Duration::ZERO;
    }
    let share = match limit {
        Some(l) if l > remaining => l - remaining,
        _ => remaining + 1,
    };
    let share = u32::try_from(share).unwrap_or(u32::MAX);
    (until_reset / share).min(MAX_SPACING)
}

/// When a request asking at `now` goes out: `gap` after the slot of the one before it (`last`),
/// not before `now`, and never more than [`MAX_SPACING`] after `now`.
fn slot(last: Option<Instant>, gap: Duration, now: Instant) -> Instant {
    match last {
        Some(last) if !gap.is_zero() => (last + gap).clamp(now, now + MAX_SPACING),
        _ => now,
    }
}

impl RateLimiter {
    /// Waits for this request's slot: never longer than `MAX_SPACING` (a minute).
    pub async fn acquire(&self) {
        let wait = {
            let Ok(mut s) = self.state.lock() else {
                return;
            };
            let gap = match (s.remaining, s.reset) {
                (Some(remaining), Some(reset)) => {
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default();
                    spacing(
                        s.limit,
                        remaining,
                        Duration::from_secs(reset).saturating_sub(now),
                    )
                }
                _ => Duration::ZERO,
            };
            let now = Instant::now();
            let slot = slot(s.last, gap, now);
            s.last = Some(slot);
            if !gap.is_zero() {
                // Count this request against what remains until an answer says more.
                s.remaining = s.remaining.map(|r| r.saturating_sub(1));
            }
            slot - now
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes note of the rate limit headers of an answer.
    pub fn observe(&self, headers: &HeaderMap) {
        let num =
            |name: &str| -> Option<u64> { headers.get(name)?.to_str().ok()?.trim().parse().ok() };
        let (limit, remaining, reset) = (
            num("ratelimit-limit"),
            num("ratelimit-remaining"),
            num("ratelimit-reset"),
        );
        if remaining.is_none() && reset.is_none() {
            return;
        }
        if let Ok(mut s) = self.state.lock() {
            s.limit = limit.or(s.limit);
            s.remaining = remaining;
            s.reset = reset;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_spaced_only_when_few_remain() {
        let hour = Duration::from_secs(3600);
        assert_eq!(spacing(Some(3600), 500, hour), Duration::ZERO);
        assert_eq!(spacing(Some(3600), LOW, hour), Duration::ZERO);
        // Hetzner refills one a second: 3595 requests to give back in 3595 s.
        assert_eq!(
            spacing(Some(3600), 5, Duration::from_secs(3595)),
            Duration::from_secs(1)
        );
        // Without a limit: what remains spread over the time left, bounded.
        assert_eq!(
            spacing(None, 4, Duration::from_secs(10)),
            Duration::from_secs(2)
        );
        assert_eq!(spacing(None, 0, hour), MAX_SPACING);
        assert_eq!(spacing(Some(3600), 0, Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn a_request_waits_a_gap_after_the_one_before_it_but_never_past_the_cap() {
        let now = Instant::now();
        let second = Duration::from_secs(1);
        assert_eq!(slot(None, second, now), now);
        assert_eq!(slot(Some(now), Duration::ZERO, now), now);
        assert_eq!(slot(Some(now), second, now), now + second);
        // The one before went out long ago: no wait.
        assert_eq!(slot(Some(now), second, now + 5 * second), now + 5 * second);
        // Far down a queue, slots would chain past the cap: each wait stops at it.
        let queued = now + Duration::from_secs(600);
        assert_eq!(slot(Some(queued), MAX_SPACING, now), now + MAX_SPACING);
        assert_eq!(slot(Some(queued), second, now), now + MAX_SPACING);
    }

    #[tokio::test]
    async fn a_low_budget_spaces_the_requests() {
        let l = RateLimiter::default();
        let reset = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            + 2;
        let mut h = HeaderMap::new();
        h.insert("RateLimit-Remaining", "1".parse().expect("header"));
        h.insert(
            "RateLimit-Reset",
            reset.to_string().parse().expect("header"),
        );
        l.observe(&h);
        let start = Instant::now();
        l.acquire().await;
        l.acquire().await;
        // Two requests: the second waits for its slot, a share of the time left.
        assert!(start.elapsed() >= Duration::from_millis(300));
        assert!(start.elapsed() < Duration::from_secs(3));
    }
}
