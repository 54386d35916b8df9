//! The JSON bodies of `POST /v1/reserve` and `POST /v1/block`, exactly as
//! they travel: the contract shared with the filter, `sluice-wire`.

pub use sluice_wire::{
    BlockReply, BlockRequest, KeyBlockReply, KeyBlockRequest, LeaseReply, LeaseRequest,
    ReserveReply, ReserveRequest,
};
