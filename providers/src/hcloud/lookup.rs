//! Finding things by name: load balancers, networks, servers.
//!
//! Load balancers are read as the crate's full `LoadBalancer` model, which kz compares. Servers
//! and networks are only ever named here, so they are read as `{id, name}`: a server object has
//! some twenty required fields, and a drift in one kz does not use (Hetzner is retiring
//! `datacenter`) must not stop kz from naming a load balancer's targets.

use std::collections::HashMap;

use hcloud::models;
use serde::Deserialize;

use super::client::{ApiError, Client, ListMeta, LoadBalancers, Page, next_of};

#[derive(Debug, Deserialize)]
pub struct Named {
    pub id: i64,
    pub name: String,
}

#[derive(Debug, Deserialize)]
struct Servers {
    servers: Vec<Named>,
    meta: Option<ListMeta>,
}

impl Page for Servers {
    type Item = Named;
    fn into_parts(self) -> (Vec<Named>, Option<i64>) {
        (self.servers, next_of(self.meta))
    }
}

#[derive(Debug, Deserialize)]
struct Networks {
    networks: Vec<Named>,
    meta: Option<ListMeta>,
}

impl Page for Networks {
    type Item = Named;
    fn into_parts(self) -> (Vec<Named>, Option<i64>) {
        (self.networks, next_of(self.meta))
    }
}

fn by_name(name: &str) -> [(&'static str, String); 1] {
    [("name", name.to_string())]
}

/// Every load balancer of the project.
pub async fn load_balancers(c: &Client) -> Result<Vec<models::LoadBalancer>, ApiError> {
    c.list_all::<LoadBalancers>("/load_balancers", &[]).await
}

/// The load balancer of this name, if there is one.
pub async fn load_balancer(
    c: &Client,
    name: &str,
) -> Result<Option<models::LoadBalancer>, ApiError> {
    let found = c
        .list_all::<LoadBalancers>("/load_balancers", &by_name(name))
        .await?;
    Ok(found.into_iter().find(|lb| lb.name == name))
}

/// The id of the network of this name, if there is one.
pub async fn network_id(c: &Client, name: &str) -> Result<Option<i64>, ApiError> {
    let found = c.list_all::<Networks>("/networks", &by_name(name)).await?;
    Ok(found.into_iter().find(|n| n.name == name).map(|n| n.id))
}

/// The names of every network of the project, by id.
pub async fn network_names(c: &Client) -> Result<HashMap<i64, String>, ApiError> {
    let all = c.list_all::<Networks>("/networks", &[]).await?;
    Ok(all.into_iter().map(|n| (n.id, n.name)).collect())
}

/// Every server of the project (one request per 50 servers).
pub async fn servers(c: &Client) -> Result<Vec<Named>, ApiError> {
    c.list_all::<Servers>("/servers", &[]).await
}
