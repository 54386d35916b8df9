//! What goes into a flow (its events, and the host's clock and store
//! while it handles one) and what comes out (what the host must do, and
//! each decision for logs and metrics).

use crate::lease::Answer;
use crate::limiter::{Carry, Decision, LeaseNeed, Spent};
use crate::request::Request;
use crate::response::Reply;
use crate::store::SharedStore;

/// What the machine may use while it handles an event.
pub struct Env<'a> {
    pub store: &'a dyn SharedStore,
    /// The request's attributes (and its buffered body, of
    /// [`Flow::body_size`] bytes).
    pub request: &'a mut dyn Request,
    pub host: &'a mut dyn Host,
}

/// The host's clock and circumstances, asked for only when an event needs
/// them (a body chunk the machine does not read costs no hostcall).
pub trait Host {
    /// Wall-clock nanoseconds (asked at most once per event).
    fn now(&mut self) -> u64;
    /// Any random number (spreads waiting requests, jitters retry-after).
    fn random(&mut self) -> u64;
    /// The counter service is known to be unreachable.
    fn degraded(&mut self) -> bool;
    /// Requests the worker holds now, this one not included (the bound is
    /// [`crate::limiter::MAX_HELD_PER_WORKER`]).
    fn held_here(&mut self) -> usize;
}

/// Fixed circumstances: for the replay and tests (a fake clock), or a host
/// that read them once.
#[derive(Clone, Copy, Debug, Default)]
pub struct At {
    pub now: u64,
    pub random: u64,
    pub degraded: bool,
    pub held_here: usize,
}

impl At {
    pub fn new(now: u64) -> At {
        At { now, ..At::default() }
    }
}

impl Host for At {
    fn now(&mut self) -> u64 {
        self.now
    }
    fn random(&mut self) -> u64 {
        self.random
    }
    fn degraded(&mut self) -> bool {
        self.degraded
    }
    fn held_here(&mut self) -> usize {
        self.held_here
    }
}

/// Something that happened to the request.
pub enum Event {
    /// Its headers arrived (`end_of_stream`: it has no body).
    Headers { end_of_stream: bool },
    /// `size` bytes of body are buffered so far.
    Body { size: usize, end_of_stream: bool },
    /// Trailers arrived: the body is whole.
    Trailers,
    /// The answer to the reserve call the machine asked for, or `None`
    /// when the call could not be made or brought no usable answer.
    Answered(Option<Vec<Answer>>),
    /// The time it asked to be woken at has come.
    Wake,
    /// The upstream's answer (or Envoy's own for an upstream that failed)
    /// has this status: rules that count only successes give back what a
    /// failed request spent.
    Response { status: u32 },
    /// A part of the response that rules whose cost the response tells
    /// settle on (see [`super::Flow::response_wants`]).
    ResponseCost(super::ResponsePart),
    /// The stream ended (answered, refused, or the client left).
    Left,
}

/// What the host must do after an event. Everything but `go` is optional;
/// an empty `Out` with `go == false` means: keep the request paused.
#[derive(Debug, Default)]
pub struct Out {
    /// The request may go on upstream now (continue it, or resume it if it
    /// was paused).
    pub go: bool,
    /// Send this local reply.
    pub reply: Option<Reply>,
    /// Make one reserve call for these needs and hand its answer back as
    /// [`Event::Answered`] (`None` at once if it cannot be made).
    pub call: Option<Vec<LeaseNeed>>,
    /// Keep the request paused and hand it [`Event::Wake`] at this time
    /// (wall-clock ns; on the host's tick).
    pub wake_at: Option<u64>,
    /// Leases to top up in the background (the instance's leader asks).
    pub refills: Vec<LeaseNeed>,
    /// Every decision made, for logs and metrics ([`tallies`]).
    pub decided: Vec<Decided>,
    /// Lease units the counter service granted, per rule (metrics).
    pub granted: Vec<(usize, u64)>,
    /// Shared-data failures and other things worth a log line.
    pub warnings: Vec<String>,
    /// A request that would have waited was refused: the worker holds its
    /// bound of requests.
    pub hold_refused: bool,
    /// The request leaves a wait for upstream now, after this long (ns).
    pub waited_ns: Option<u64>,
    /// Rules that gave back what the request spent: its answer failed.
    pub refunded: Vec<usize>,
    /// Penalty boxes of global rules to share with the other instances
    /// (through the counter service's blocks).
    pub share: Vec<crate::counter_api::Block>,
    /// Costs settled to the response's figure, one per rule (metrics).
    pub settled: Vec<super::Settled>,
}

impl Out {
    /// Nothing to carry out but `go` (a body chunk the flow does not
    /// read, say): the host may skip its bookkeeping.
    pub fn is_quiet(&self) -> bool {
        self.reply.is_none()
            && self.call.is_none()
            && self.wake_at.is_none()
            && self.refills.is_empty()
            && self.decided.is_empty()
            && self.granted.is_empty()
            && self.warnings.is_empty()
            && !self.hold_refused
            && self.waited_ns.is_none()
            && self.refunded.is_empty()
            && self.share.is_empty()
            && self.settled.is_empty()
    }
}

/// One decision and what came of it.
#[derive(Debug)]
pub struct Decided {
    pub decision: Decision,
    /// What the request carried into it (units granted to it, turns kept).
    pub carried: Vec<Carry>,
    /// Its first decision that was not a wait for a reserve call (metrics
    /// count a request's queueing and header mismatch once).
    pub first: bool,
    pub fate: Fate,
}

/// What a decision meant for the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// It waits for a reserve call, having spent nothing.
    Calls,
    /// A 429 or 503 was sent.
    Replied,
    /// Admitted; it waits for its turn in a queue.
    Holds,
    /// It waits for a later window and is decided again then.
    WaitsWindow,
    /// Admitted, goes upstream now.
    Goes,
}

/// What an admitted request's response is for.
#[derive(Clone, Debug, Default)]
pub struct Admitted {
    /// Rate-limit headers to add to the response.
    pub headers: Vec<(String, String)>,
    /// What it spent (the keys of its rules, to learn an upstream's wait).
    pub spent: Vec<Spent>,
    /// The keys of its global rules that obey upstream limits.
    pub global_ids: Vec<(usize, String)>,
    /// Some rule that applied obeys the upstream's limits.
    pub learns: bool,
    /// The adaptive rules that applied.
    pub adapts: Vec<usize>,
    /// When it went upstream (wall-clock ns).
    pub sent_at: u64,
}
