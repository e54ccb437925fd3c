//! Tests of the chunked contract (index codec, layout, fetch plan), and a small chunked-bundle builder the
//! reader's and the head's tests share.

pub(crate) mod fixture;
mod index;
mod layout;
mod plan;
