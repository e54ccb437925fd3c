//! What the agent's tests share beyond the test kit's robots (`ota_testkit::robot`): a small
//! misbehaving HTTP server ([`http`]) and simulated power cuts ([`cut`]).

pub mod cut;
pub mod http;
