//! Running an [`Op`] as its API call, and waiting for the action it starts: `GET /actions/{id}`
//! every `poll` until `success` or `error`, and never past the deadline.

use std::time::Duration;

use hcloud::models;
use hcloud::models::action::Status;
use tokio::time::Instant;

use super::client::Client;
use super::diff::Op;
use super::spec::{algorithm_of, service_to_api, service_to_update};

/// How actions are waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiting {
    /// The pause between two looks at a running action (hcloud-go uses 500 ms).
    pub poll: Duration,
    /// How long one action may run before kz gives up on it.
    pub deadline: Duration,
}

impl Default for Waiting {
    fn default() -> Self {
        Waiting {
            poll: Duration::from_millis(500),
            deadline: Duration::from_secs(300),
        }
    }
}

/// The error of an action that ended in `error`.
pub fn action_failed(a: &models::Action) -> String {
    let (code, message) = a
        .error
        .as_deref()
        .map_or(("unknown", "no error given"), |e| {
            (e.code.as_str(), e.message.as_str())
        });
    format!("hcloud: action {} failed: {code}: {message}", a.command)
}

/// Waits until `action` is done; an error when it failed or outlived the deadline.
pub async fn wait(c: &Client, action: models::Action, w: Waiting) -> Result<(), String> {
    let deadline = Instant::now() + w.deadline;
    let mut a = action;
    loop {
        match a.status {
            Status::Success => return Ok(()),
            Status::Error => return Err(action_failed(&a)),
            Status::Running => {}
        }
        if Instant::now() + w.poll > deadline {
            return Err(format!(
                "hcloud: action {} ({}) still running after {}; kz stopped waiting for it",
                a.command,
                a.id,
                kz_engine::units::format_duration(w.deadline)
            ));
        }
        tokio::time::sleep(w.poll).await;
        let got: models::GetActionResponse = c
            .get(&format!("/actions/{}", a.id), &[])
            .await
            .map_err(|e| e.to_string())?;
        a = *got.action;
    }
}

/// Posts `/load_balancers/{id}/actions/{name}` and waits for the action.
async fn act<B: serde::Serialize>(
    c: &Client,
    lb: i64,
    name: &str,
    body: Option<&B>,
    w: Waiting,
) -> Result<(), String> {
    let path = format!("/load_balancers/{lb}/actions/{name}");
    let got: models::GetActionResponse = c.post(&path, body).await.map_err(|e| e.to_string())?;
    wait(c, *got.action, w).await
}

/// Makes one change to load balancer `lb`, and waits until it is done.
pub async fn perform(c: &Client, lb: i64, op: &Op, w: Waiting) -> Result<(), String> {
    use models::remove_target_request::Type as RemoveType;
    let step = op.step();
    match op {
        Op::ChangeType(t) => {
            let body = models::ChangeTypeOfLoadBalancerRequest {
                load_balancer_type: t.clone(),
            };
            act(c, lb, step, Some(&body), w).await
        }
        Op::ChangeAlgorithm(a) => act(c, lb, step, Some(&algorithm_of(a)?), w).await,
        Op::SetLabels(labels) => {
            let body = models::ReplaceLoadBalancerRequest {
                labels: Some(labels.clone().into_iter().collect()),
                name: None,
            };
            c.put(&format!("/load_balancers/{lb}"), &body)
                .await
                .map_err(|e| e.to_string())
        }
        Op::EnablePublicInterface | Op::DisablePublicInterface => {
            act::<()>(c, lb, step, None, w).await
        }
        Op::RemoveServerTarget { id, .. } => {
            let body = models::RemoveTargetRequest {
                server: Some(Box::new(models::ResourceId { id: *id })),
                ..models::RemoveTargetRequest::new(RemoveType::Server)
            };
            act(c, lb, step, Some(&body), w).await
        }
        Op::RemoveLabelTarget(selector) => {
            let body = models::RemoveTargetRequest {
                label_selector: Some(Box::new(models::LabelSelector::new(selector.clone()))),
                ..models::RemoveTargetRequest::new(RemoveType::LabelSelector)
            };
            act(c, lb, step, Some(&body), w).await
        }
        Op::RemoveIpTarget(ip) => {
            let body = models::RemoveTargetRequest {
                ip: Some(Box::new(models::LoadBalancerTargetIp::new(ip.clone()))),
                ..models::RemoveTargetRequest::new(RemoveType::Ip)
            };
            act(c, lb, step, Some(&body), w).await
        }
        Op::DetachFromNetwork { id } => {
            let body = models::DetachLoadBalancerFromNetworkRequest { network: *id };
            act(c, lb, step, Some(&body), w).await
        }
        Op::AttachToNetwork { id, ip } => {
            let body = models::AttachLoadBalancerToNetworkRequest {
                ip: ip.clone(),
                ip_range: None,
                network: *id,
            };
            act(c, lb, step, Some(&body), w).await
        }
        Op::AddServerTarget {
            id, use_private_ip, ..
        } => {
            let body = server_target(*id, *use_private_ip);
            act(c, lb, step, Some(&body), w).await
        }
        Op::AddLabelTarget {
            selector,
            use_private_ip,
        } => {
            let body = label_target(selector, *use_private_ip);
            act(c, lb, step, Some(&body), w).await
        }
        Op::DeleteService(port) => {
            let body = models::DeleteServiceRequest {
                listen_port: i32::from(*port),
            };
            act(c, lb, step, Some(&body), w).await
        }
        Op::UpdateService(s) => act(c, lb, step, Some(&service_to_update(s)?), w).await,
        Op::AddService(s) => act(c, lb, step, Some(&service_to_api(s)?), w).await,
    }
}

/// A server target as the create and `add_target` calls take it.
pub fn server_target(id: i64, use_private_ip: bool) -> models::LoadBalancerAddTarget {
    models::LoadBalancerAddTarget {
        server: Some(Box::new(models::ResourceId { id })),
        use_private_ip: Some(use_private_ip),
        ..models::LoadBalancerAddTarget::new(models::load_balancer_add_target::Type::Server)
    }
}

/// A label selector target as the create and `add_target` calls take it.
pub fn label_target(selector: &str, use_private_ip: bool) -> models::LoadBalancerAddTarget {
    models::LoadBalancerAddTarget {
        label_selector: Some(Box::new(models::LabelSelector::new(selector.to_string()))),
        use_private_ip: Some(use_private_ip),
        ..models::LoadBalancerAddTarget::new(models::load_balancer_add_target::Type::LabelSelector)
    }
}
