//! DNS for the Realm Gateway.
//!
//! Sans-IO: [`answer::Responder::handle`] takes the bytes of a query, the view it
//! arrived on (public WAN or private LAN) and an [`answer::Allocator`] that makes
//! Circular Pool reservations, and returns what to do: send a reply, drop the
//! query, or forward it upstream. Sockets live in the `rgw` crate.

pub mod answer;
pub mod antispoof;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz_harness;
pub mod sfqdn;
pub mod synth;
pub mod zone;

pub use answer::{
    Action, AllocRequest, Allocation, Allocator, DeniedPolicy, DenyReason, DropReason, Outcome,
    QueryContext, Responder, SpoofEvent, Transport, View,
};
pub use antispoof::{AliasError, AliasKey, AliasZone, AntiSpoof};
pub use sfqdn::{L4Proto, ServiceKey};
pub use zone::{Host, Lookup, ZoneData, ZoneSettings};
