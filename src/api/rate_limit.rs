//! Rate limits: how fast each caller may send requests, reads (GET, HEAD) and changes (every other
//! method) counted apart, so that one caller's flood never slows another's requests.
//!
//! - A caller is the user a valid token belongs to, so a new token (`rotate-token`) does not
//!   reset a user's budget; a request without a valid token (none, unknown, a disabled user's)
//!   is counted by its peer address instead, which slows the guessing of tokens. Such a request
//!   is answered 429 rather than 401 once its address is over the limit, so a guesser learns
//!   nothing more. An IPv6 address counts by its /64, which one host commonly holds whole.
//! - The check is a middleware on every route but `/healthz` (which a monitor must always
//!   reach), run before the handler: a refused request reads no body and writes nothing.
//! - Each caller has a bucket of its own per class (governor's GCRA, keyed): the rate refills it,
//!   the burst is its size. Buckets full again (their callers gone quiet) are dropped every
//!   `SWEEP_INTERVAL`, so memory holds the callers of the last burst ÷ rate seconds (two, by
//!   default) and that interval, not every address or token ever seen.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use serde::Serialize;

use super::auth::CurrentUser;
use super::{ApiError, AppState};
use crate::config::{Rate, RateLimits};

/// How often the buckets of callers gone quiet (full again) are dropped.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// What a request is counted as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    Reads,
    Changes,
}

impl Class {
    fn of(method: &Method) -> Class {
        if matches!(*method, Method::GET | Method::HEAD) { Class::Reads } else { Class::Changes }
    }
}

/// Whose bucket a request is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Caller {
    User(i64),
    Address(IpAddr),
}

impl Caller {
    fn address(ip: IpAddr) -> Caller {
        match ip.to_canonical() {
            IpAddr::V6(v6) => Caller::Address(IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64)))),
            v4 => Caller::Address(v4),
        }
    }

    fn counted_by(&self) -> CountedBy {
        match self {
            Caller::User(_) => CountedBy::User,
            Caller::Address(_) => CountedBy::Address,
        }
    }
}

/// How a refused request was counted: by its token's user, or by its address (no valid token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CountedBy {
    User,
    Address,
}

/// A request refused for going beyond its caller's limit.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Throttled {
    /// `reads` or `changes`.
    pub limit: Class,
    pub counted_by: CountedBy,
    pub per_second: u32,
    pub burst: u32,
    /// Whole seconds until the request would pass, rounded up: what `Retry-After` says.
    pub retry_after: u64,
}

impl fmt::Display for Throttled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.limit {
            Class::Reads => "reads (GET, HEAD)",
            Class::Changes => "changes (POST, PATCH, PUT, DELETE)",
        };
        let whose = match self.counted_by {
            CountedBy::User => "this token's user",
            CountedBy::Address => "this address (requests without a valid token are counted by address)",
        };
        write!(
            f,
            "too many {what}: {whose} may send {} a second, {} at once; try again in {} s",
            self.per_second, self.burst, self.retry_after
        )
    }
}

/// One class's limit and every caller's bucket.
struct Buckets {
    rate: Rate,
    limiter: DefaultKeyedRateLimiter<Caller>,
}

impl Buckets {
    fn new(rate: Rate) -> Buckets {
        Buckets {
            rate,
            limiter: DefaultKeyedRateLimiter::keyed(Quota::per_second(rate.per_second).allow_burst(rate.burst)),
        }
    }
}

/// The buckets of every caller, reads and changes apart.
pub struct RateLimiter {
    reads: Option<Buckets>,
    changes: Option<Buckets>,
    next_sweep: Mutex<Instant>,
}

impl RateLimiter {
    pub fn new(limits: RateLimits) -> RateLimiter {
        RateLimiter {
            reads: limits.reads.map(Buckets::new),
            changes: limits.changes.map(Buckets::new),
            next_sweep: Mutex::new(Instant::now() + SWEEP_INTERVAL),
        }
    }

    /// Counts one request of `class` in `caller`'s bucket, or says how long until it would pass.
    fn check(&self, class: Class, caller: Caller) -> Result<(), Throttled> {
        self.sweep_if_due();
        let buckets = match class {
            Class::Reads => &self.reads,
            Class::Changes => &self.changes,
        };
        let Some(Buckets { rate, limiter }) = buckets else { return Ok(()) };
        limiter.check_key(&caller).map_err(|not_until| {
            let wait = not_until.wait_time_from(limiter.clock().now());
            Throttled {
                limit: class,
                counted_by: caller.counted_by(),
                per_second: rate.per_second.get(),
                burst: rate.burst.get(),
                retry_after: whole_seconds_up(wait),
            }
        })
    }

    /// Drops the buckets that are full again (their callers have gone quiet), at most once every
    /// `SWEEP_INTERVAL`; a request that finds another one sweeping goes on without waiting.
    fn sweep_if_due(&self) {
        let Ok(mut next_sweep) = self.next_sweep.try_lock() else { return };
        let now = Instant::now();
        if now < *next_sweep {
            return;
        }
        *next_sweep = now + SWEEP_INTERVAL;
        drop(next_sweep);
        self.sweep();
    }

    fn sweep(&self) {
        for buckets in [&self.reads, &self.changes].into_iter().flatten() {
            buckets.limiter.retain_recent();
            buckets.limiter.shrink_to_fit();
        }
    }

    /// How many callers have a bucket (in either class).
    #[cfg(test)]
    fn callers(&self) -> usize {
        [&self.reads, &self.changes].into_iter().flatten().map(|b| b.limiter.len()).sum()
    }
}

/// `wait` in whole seconds, rounded up, and at least 1: a client told 0 would retry at once.
fn whole_seconds_up(wait: Duration) -> u64 {
    (wait.as_nanos().div_ceil(1_000_000_000) as u64).max(1)
}

/// What the middleware needs: the app's state, to authenticate, and the buckets.
#[derive(Clone)]
pub struct Limiting {
    state: AppState,
    limiter: Arc<RateLimiter>,
}

impl Limiting {
    pub fn new(state: AppState) -> Limiting {
        let limiter = Arc::new(RateLimiter::new(state.config.rate_limits));
        Limiting { state, limiter }
    }
}

/// Authenticates the request, counts it in its caller's bucket, and hands the user on to the
/// handler (`CurrentUser` takes it from the request); over the limit, 429 before anything else,
/// and without a valid token, 401.
pub async fn limit_callers(State(limiting): State<Limiting>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let authenticated = CurrentUser::from_request_parts(&mut parts, &limiting.state).await;
    let caller = match &authenticated {
        Ok(CurrentUser(user)) => Caller::User(user.id),
        // Served other than by `api::serve` there is no peer address: one bucket for them all.
        Err(_) => Caller::address(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::from(Ipv6Addr::UNSPECIFIED), |ConnectInfo(peer)| peer.ip()),
        ),
    };
    if let Err(throttled) = limiting.limiter.check(Class::of(&parts.method), caller) {
        return ApiError::RateLimited(throttled).into_response();
    }
    match authenticated {
        Ok(user) => {
            parts.extensions.insert(user);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(error) => error.into_response(),
    }
}

/// The web console's limit: every request counted by its peer address, in the same buckets as
/// the API's requests without a valid token (a console session is no token this layer knows), so
/// that guessing tokens at its sign-in form is no faster than at the API.
pub async fn limit_addresses(State(limiting): State<Limiting>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from(Ipv6Addr::UNSPECIFIED), |ConnectInfo(peer)| peer.ip());
    if let Err(throttled) = limiting.limiter.check(Class::of(request.method()), Caller::address(peer)) {
        return ApiError::RateLimited(throttled).into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(reads: (u32, u32), changes: (u32, u32)) -> RateLimiter {
        let rate = |(per_second, burst)| Rate::from_settings("", per_second, burst).unwrap();
        RateLimiter::new(RateLimits { reads: rate(reads), changes: rate(changes) })
    }

    #[test]
    fn a_caller_gets_its_burst_and_then_is_told_to_wait_while_another_caller_still_passes() {
        let limiter = limiter((0, 0), (1, 3));
        let (alice, bob) = (Caller::User(1), Caller::User(2));

        let passed = (0..3).filter(|_| limiter.check(Class::Changes, alice).is_ok()).count();
        let refused = limiter.check(Class::Changes, alice).unwrap_err();

        assert_eq!(passed, 3);
        assert_eq!(
            (refused.limit, refused.counted_by, refused.per_second, refused.burst),
            (Class::Changes, CountedBy::User, 1, 3)
        );
        assert_eq!(refused.retry_after, 1, "one change a second: the next within a second");
        assert!(limiter.check(Class::Changes, bob).is_ok());
        assert!(limiter.check(Class::Reads, alice).is_ok(), "reads have no limit here");
    }

    #[test]
    fn a_wait_is_rounded_up_to_whole_seconds_and_is_never_zero() {
        assert_eq!(whole_seconds_up(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds_up(Duration::from_millis(1001)), 2);
        assert_eq!(whole_seconds_up(Duration::from_secs(3)), 3);
        assert_eq!(whole_seconds_up(Duration::ZERO), 1);
    }

    #[test]
    fn the_addresses_of_one_ipv6_64_share_a_bucket_and_an_ipv4_mapped_one_counts_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();

        assert_eq!(Caller::address(a), Caller::address(b));
        assert_ne!(Caller::address(a), Caller::address(other));
        assert_eq!(Caller::address(mapped), Caller::Address("192.0.2.7".parse().unwrap()));
    }

    #[test]
    fn the_buckets_of_callers_gone_quiet_are_dropped_so_memory_stays_bounded() {
        // A thousand a second: a bucket that took one request is full again a millisecond later.
        let limiter = limiter((1000, 1), (1000, 1));
        for n in 0..10_000u32 {
            let _ = limiter.check(Class::Reads, Caller::address(IpAddr::from(n.to_be_bytes())));
        }
        assert_eq!(limiter.callers(), 10_000);

        let deadline = Instant::now() + Duration::from_secs(10);
        while limiter.callers() > 0 {
            assert!(Instant::now() < deadline, "{} buckets still kept", limiter.callers());
            std::thread::sleep(Duration::from_millis(10));
            limiter.sweep();
        }
    }
}
