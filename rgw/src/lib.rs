//! The Realm Gateway daemon: configuration, the Circular Pool, the nftables
//! data plane and the DNS shell. The hard logic (pool, answer policy) is
//! sans-IO; the rest moves bytes and time in and out.

pub mod admission;
pub mod bindings;
pub mod bindlog;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod dnsserver;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz_harness;
pub mod gateway;
pub mod limits;
pub mod metrics;
pub mod pool;
pub mod prometheus;
pub mod proxy;
pub mod rgw64;
