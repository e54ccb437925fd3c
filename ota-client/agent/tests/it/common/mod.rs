//! What the agent's tests share beyond the test kit's robots (`ota_testkit::robot`): a small
//! misbehaving HTTP server ([`http`]), simulated power cuts ([`cut`]) and a bundle served by the kit's server
//! behind its proxy ([`served`]).

pub mod cut;
pub mod http;
pub mod served;
