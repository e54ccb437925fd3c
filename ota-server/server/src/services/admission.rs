//! Robot identity: one-time enrollment challenges, the proof of a robot's key, and the operator's admission
//! decisions (admit, reject / revoke, pre-authorise). The decisions themselves are [`crate::admission`]'s.

use std::sync::atomic::Ordering;

use ota_keys::{PublicKey, Signature};
use ota_protocol::admin::{Admission, DeviceIdentity};
use ota_protocol::device::{enroll_message, ChallengeRequest, ChallengeResponse, EnrollRequest};
use rand_core::{OsRng, RngCore};

use super::devices::DeviceService;
use crate::admission::{self, Known, Op, OpError, Refusal, Verdict};
use crate::cluster::Subject;
use crate::error::ServiceError;
use crate::fleet::{lock, read, unix_now, write};
use crate::tokens;

/// How long a pending robot is told to wait before asking again.
const PENDING_RETRY_SECS: u64 = 30;

/// An operator's admission change (`POST /api/devices/{id}/admit|reject|preauthorize`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminAction {
    /// Admit a robot that asked.
    Admit,
    /// Reject a robot; its tokens stop working at once.
    Reject,
    /// Accept this key (hex or SPKI PEM) on first contact.
    Preauthorize(String),
}

/// A public key given as 64 hex digits or an SPKI PEM, as the 64 hex digits the server stores.
fn normalize_key(text: &str) -> Result<String, ServiceError> {
    let text = text.trim();
    let key = if text.starts_with("-----BEGIN") {
        PublicKey::from_pem(text).map_err(|e| ServiceError::Invalid(format!("public key: {e}")))?
    } else {
        let raw: [u8; 32] = hex::decode(text)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                ServiceError::Invalid(
                    "public key must be 64 hex digits (a raw ed25519 key) or an SPKI PEM".into(),
                )
            })?;
        PublicKey::from_bytes(&raw)
            .map_err(|e| ServiceError::Invalid(format!("public key: {e}")))?
    };
    Ok(hex::encode(key.to_bytes()))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Checks that the request's signature over [`enroll_message`] verifies with its key.
fn verify_proof(req: &EnrollRequest, key_hex: &str, challenge: &str) -> Result<(), ServiceError> {
    let refused = || {
        ServiceError::Unauthenticated(
            "the enrollment signature does not verify with the presented key".into(),
        )
    };
    let raw: [u8; 32] = hex::decode(key_hex)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(refused)?;
    let key = PublicKey::from_bytes(&raw).map_err(|_| refused())?;
    let sig: [u8; 64] = req
        .signature
        .as_deref()
        .and_then(|s| hex::decode(s).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or_else(refused)?;
    let signature = Signature {
        key_id: key.key_id(),
        sig,
    };
    let message = enroll_message(&req.device_id, key_hex, challenge, &req.request_id);
    key.verify(&message, &signature).map_err(|_| refused())
}

impl DeviceService {
    /// A one-time enrollment challenge for a device id.
    pub fn challenge(&self, req: &ChallengeRequest) -> Result<ChallengeResponse, ServiceError> {
        ota_protocol::validate_device_id(&req.device_id).map_err(ServiceError::Invalid)?;
        Ok(ChallengeResponse {
            challenge: tokens::challenge(
                &self.0.secrets.token_key,
                &req.device_id,
                now_ms(),
                OsRng.next_u64(),
            ),
            expires_in_secs: tokens::CHALLENGE_TTL_MS / 1000,
        })
    }

    /// Every robot identity, by id.
    pub async fn identities(&self) -> Result<Vec<DeviceIdentity>, ServiceError> {
        self.0.blocking(|s| s.identities()).await
    }

    /// Proves the request's key and decides its admission (the writer lock held); gives the expiry of the token
    /// to issue, or why there is none.
    pub(super) async fn admit_key(
        &self,
        req: &EnrollRequest,
        key_text: &str,
        secret_ok: bool,
    ) -> Result<u64, ServiceError> {
        let shared = &self.0;
        let id = req.device_id.clone();
        let key = hex::encode(hex::decode(key_text).unwrap_or_default());
        let challenge = req.challenge.as_deref().ok_or_else(|| {
            ServiceError::Invalid(
                "an enrollment with a key needs a challenge (POST /api/devices/challenge) and a signature"
                    .into(),
            )
        })?;
        let issued = tokens::check_challenge(&shared.secrets.token_key, &id, challenge, now_ms())
            .map_err(|e| ServiceError::Unauthenticated(e.to_string()))?;
        verify_proof(req, key_text, challenge)?;
        let lookup = id.clone();
        let known_identity = shared.blocking(move |s| s.identity(&lookup)).await?;
        let known = known_identity.as_ref().map(|k| Known {
            admission: k.admission,
            same_key: k.public_key == key,
        });
        let now = unix_now();
        let verdict = admission::decide(known, secret_ok, shared.config.admission);
        let new = |admission, decided_by: Option<&str>| DeviceIdentity {
            device_id: id.clone(),
            public_key: key.clone(),
            admission,
            requested_at: now,
            decided_at: decided_by.map(|_| now),
            decided_by: decided_by.map(str::to_string),
        };
        let record = match verdict {
            Verdict::Refuse(Refusal::WrongSecret) => {
                return Err(ServiceError::Unauthenticated(
                    "wrong enrollment secret".into(),
                ))
            }
            Verdict::Refuse(Refusal::OtherKey) => {
                return Err(ServiceError::Conflict(format!(
                    "device '{id}' is enrolled with another key; to give it a new key, an operator must first \
                     DELETE /api/devices/{id}"
                )))
            }
            Verdict::Refuse(Refusal::Rejected) => {
                return Err(ServiceError::Forbidden(format!(
                    "device '{id}' was rejected by an operator"
                )))
            }
            Verdict::AskNew => {
                let mut asks = lock(&shared.asks);
                let (start, limiter) = &mut *asks;
                let at = start.elapsed().as_millis() as u64;
                if let Err(wait) = limiter.take(admission::ASK_LIMIT, at) {
                    shared.metrics.backoff_429.fetch_add(1, Ordering::Relaxed);
                    return Err(ServiceError::TooFast {
                        retry_after_secs: wait.as_secs().max(1),
                        message: "too many new robots are asking to be admitted; ask again later"
                            .into(),
                    });
                }
                Some(new(Admission::Pending, None))
            }
            Verdict::AdmitNew => Some(new(Admission::Accepted, Some("auto"))),
            Verdict::Waiting | Verdict::Token => None,
        };
        if let Some(record) = record {
            shared.blocking(move |s| s.put_identity(&record)).await?;
        }
        let claimed = id.clone();
        if !shared
            .blocking(move |s| s.claim_challenge(&claimed, issued))
            .await?
        {
            return Err(ServiceError::Unauthenticated(
                "this enrollment challenge was used already; ask for a new one".into(),
            ));
        }
        if matches!(verdict, Verdict::AskNew | Verdict::Waiting) {
            return Err(ServiceError::NotYet {
                retry_after_secs: PENDING_RETRY_SECS,
                message: format!(
                    "device '{id}' is waiting for an operator to admit it (ota-server devices admit {id})"
                ),
            });
        }
        Ok(now + shared.config.device_token_ttl_secs)
    }

    /// Whether a robot without a key may enroll as `device_id`: only under `admission = "auto"`, and only for
    /// an id with no key on record.
    pub(super) async fn keyless_allowed(&self, device_id: &str) -> Result<(), ServiceError> {
        let shared = &self.0;
        if shared.config.admission != admission::AdmissionMode::Auto {
            return Err(ServiceError::Forbidden(
                "this server admits only robots that present a device key (admission = \"manual\"); \
                 update ota-client on the robot"
                    .into(),
            ));
        }
        let id = device_id.to_string();
        if shared.blocking(move |s| s.identity(&id)).await?.is_some() {
            return Err(ServiceError::Conflict(format!(
                "device '{device_id}' has a key on record: it must enroll with that key"
            )));
        }
        Ok(())
    }

    /// An operator's admission change; a rejection makes the robot's token stop working at once (here, and on
    /// the other replicas when they hear of it).
    pub async fn decide(
        &self,
        device_id: &str,
        action: AdminAction,
    ) -> Result<DeviceIdentity, ServiceError> {
        let shared = &self.0;
        ota_protocol::validate_device_id(device_id).map_err(ServiceError::Invalid)?;
        let given = match &action {
            AdminAction::Preauthorize(text) => Some(normalize_key(text)?),
            _ => None,
        };
        let _writer = shared.writer.lock().await;
        let id = device_id.to_string();
        let existing = shared.blocking(move |s| s.identity(&id)).await?;
        let op = match action {
            AdminAction::Admit => Op::Admit,
            AdminAction::Reject => Op::Reject,
            AdminAction::Preauthorize(_) => Op::Preauthorize {
                same_key: existing.as_ref().map(|e| &e.public_key) == given.as_ref(),
            },
        };
        let state = admission::transition(existing.as_ref().map(|e| e.admission), op).map_err(
            |e| match e {
                OpError::Unknown => ServiceError::NotFound(format!(
                    "no robot '{device_id}' asked to be admitted; pre-authorise its key with \
                     ota-server devices preauthorize {device_id} --key PUB.pem"
                )),
                OpError::OtherKey => ServiceError::Conflict(format!(
                    "device '{device_id}' was decided with another key; DELETE /api/devices/{device_id} \
                     first to give it a new key"
                )),
            },
        )?;
        let now = unix_now();
        let identity = DeviceIdentity {
            device_id: device_id.to_string(),
            public_key: given
                .or_else(|| existing.as_ref().map(|e| e.public_key.clone()))
                .unwrap_or_default(),
            admission: state,
            requested_at: existing.as_ref().map_or(now, |e| e.requested_at),
            decided_at: Some(now),
            decided_by: Some(match op {
                Op::Preauthorize { .. } => "admin (pre-authorised)".into(),
                _ => "admin".into(),
            }),
        };
        let stored = identity.clone();
        shared.blocking(move |s| s.put_identity(&stored)).await?;
        if state == Admission::Rejected {
            self.revoke_token(device_id).await?;
        }
        Ok(identity)
    }

    /// Replaces a device's token with one no one holds.
    async fn revoke_token(&self, device_id: &str) -> Result<(), ServiceError> {
        let shared = &self.0;
        let old = read(&shared.fleet)
            .devices
            .get(device_id)
            .map(|d| lock(d).record.token_id.clone());
        let Some(old) = old else {
            return Ok(());
        };
        let dead = format!("revoked-{:016x}", OsRng.next_u64());
        let (id, token_id) = (device_id.to_string(), dead.clone());
        shared
            .blocking(move |s| s.set_device_token(&id, &token_id, &[0; 32], Some(0)))
            .await?;
        {
            let mut fleet = write(&shared.fleet);
            fleet.tokens.remove(&old);
            if let Some(dev) = fleet.devices.get(device_id) {
                let mut dev = lock(dev);
                dev.record.token_id = dead;
                dev.record.token_hash = [0; 32];
                dev.record.token_expires_at = Some(0);
            }
        }
        shared.announce(Subject::Device(device_id.to_string()), false);
        Ok(())
    }
}
