//! Operator labels and groups: the tags and group an operator gives a robot (they override its reported
//! facts) and the settings a group shares (its maintenance windows). A relabelled robot is checked against the
//! rollouts by the next rollout tick.

use std::collections::BTreeMap;

use ota_protocol::admin::{DeviceInfo, Event};
use ota_protocol::fleet::{DeviceLabels, GroupInfo, GroupSettings};

use crate::cluster::Subject;
use crate::error::ServiceError;
use crate::fleet::{lock, read, validate_tags, write, Group};
use crate::services::devices::DeviceService;

/// Checks a group name: 1-64 characters of letters, digits, `-`, `_`, `.`.
pub fn validate_group_name(name: &str) -> Result<(), ServiceError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::Invalid(format!(
            "group {name:?}: use 1-64 letters, digits, '-', '_' or '.'"
        )))
    }
}

impl DeviceService {
    /// Sets a device's operator tags and group (replacing the previous ones).
    pub async fn set_labels(
        &self,
        device_id: &str,
        labels: DeviceLabels,
    ) -> Result<DeviceInfo, ServiceError> {
        let shared = &self.0;
        validate_tags(&labels.tags)?;
        if let Some(group) = &labels.group {
            validate_group_name(group)?;
        }
        let _writer = shared.writer.lock().await;
        let (id, stored) = (device_id.to_string(), labels.clone());
        if !shared.blocking(move |s| s.set_labels(&id, &stored)).await? {
            return Err(ServiceError::NotFound(format!("no device '{device_id}'")));
        }
        let info = {
            let fleet = read(&shared.fleet);
            let dev = fleet
                .devices
                .get(device_id)
                .ok_or_else(|| ServiceError::NotFound(format!("no device '{device_id}'")))?;
            let mut dev = lock(dev);
            dev.record.labels = labels;
            dev.info()
        };
        lock(&shared.joins).insert(device_id.to_string());
        shared.emit(Event::DeviceUpdated(Box::new(info.clone())));
        shared.announce(Subject::Device(device_id.to_string()), true);
        Ok(info)
    }

    /// Every group: those with settings and those devices name, with their device counts.
    pub fn groups(&self) -> Vec<GroupInfo> {
        let fleet = read(&self.0.fleet);
        let mut counts: BTreeMap<String, u64> =
            fleet.groups.keys().map(|name| (name.clone(), 0)).collect();
        for dev in fleet.devices.values() {
            if let Some(group) = &lock(dev).record.labels.group {
                *counts.entry(group.clone()).or_default() += 1;
            }
        }
        counts
            .into_iter()
            .map(|(name, devices)| GroupInfo {
                settings: fleet
                    .groups
                    .get(&name)
                    .map(|g| g.settings.clone())
                    .unwrap_or_default(),
                name,
                devices,
            })
            .collect()
    }

    /// Creates or replaces a group's settings.
    pub async fn put_group(
        &self,
        name: &str,
        settings: GroupSettings,
    ) -> Result<GroupInfo, ServiceError> {
        let shared = &self.0;
        validate_group_name(name)?;
        let group = Group::new(settings.clone()).map_err(ServiceError::Rejected)?;
        let _writer = shared.writer.lock().await;
        let (n, stored) = (name.to_string(), settings);
        shared.blocking(move |s| s.put_group(&n, &stored)).await?;
        write(&shared.fleet).groups.insert(name.to_string(), group);
        shared.announce(Subject::Group(name.to_string()), false);
        self.groups()
            .into_iter()
            .find(|g| g.name == name)
            .ok_or_else(|| ServiceError::NotFound(format!("no group '{name}'")))
    }
}
