//! The fixed parts of the world: locations, load balancer types, and the one server type, image
//! and datacenter every seeded server gets. Values are plausible copies of the real ones.

use serde_json::{Value, json};

pub struct Location {
    pub id: i64,
    pub name: &'static str,
    pub city: &'static str,
    pub country: &'static str,
    pub description: &'static str,
    pub latitude: f64,
    pub longitude: f64,
    pub network_zone: &'static str,
}

pub const LOCATIONS: &[Location] = &[
    Location {
        id: 1,
        name: "fsn1",
        city: "Falkenstein",
        country: "DE",
        description: "Falkenstein DC Park 1",
        latitude: 50.47612,
        longitude: 12.370071,
        network_zone: "eu-central",
    },
    Location {
        id: 2,
        name: "nbg1",
        city: "Nuremberg",
        country: "DE",
        description: "Nuremberg DC Park 1",
        latitude: 49.452102,
        longitude: 11.076665,
        network_zone: "eu-central",
    },
    Location {
        id: 3,
        name: "hel1",
        city: "Helsinki",
        country: "FI",
        description: "Helsinki DC Park 1",
        latitude: 60.169855,
        longitude: 24.938379,
        network_zone: "eu-central",
    },
    Location {
        id: 4,
        name: "ash",
        city: "Ashburn, VA",
        country: "US",
        description: "Ashburn, VA",
        latitude: 39.045821,
        longitude: -77.487073,
        network_zone: "us-east",
    },
    Location {
        id: 5,
        name: "hil",
        city: "Hillsboro, OR",
        country: "US",
        description: "Hillsboro, OR",
        latitude: 45.54222,
        longitude: -122.951924,
        network_zone: "us-west",
    },
    Location {
        id: 6,
        name: "sin",
        city: "Singapore",
        country: "SG",
        description: "Singapore",
        latitude: 1.283333,
        longitude: 103.833333,
        network_zone: "ap-southeast",
    },
];

/// A location by name or by id (the API takes "ID or name" wherever it takes a location).
pub fn location(id_or_name: &str) -> Option<&'static Location> {
    LOCATIONS
        .iter()
        .find(|l| l.name == id_or_name || l.id.to_string() == id_or_name)
}

/// The first location of a network zone, where a load balancer created with only a zone lands.
pub fn location_in_zone(zone: &str) -> Option<&'static Location> {
    LOCATIONS.iter().find(|l| l.network_zone == zone)
}

impl Location {
    pub fn json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "country": self.country,
            "city": self.city,
            "latitude": self.latitude,
            "longitude": self.longitude,
            "network_zone": self.network_zone,
        })
    }
}

pub struct LoadBalancerType {
    pub id: i64,
    pub name: &'static str,
    pub description: &'static str,
    pub max_connections: i64,
    pub max_services: usize,
    pub max_targets: usize,
    pub max_assigned_certificates: i64,
    /// Net monthly price in EUR, the rest is derived.
    pub monthly_net: f64,
}

pub const LOAD_BALANCER_TYPES: &[LoadBalancerType] = &[
    LoadBalancerType {
        id: 1,
        name: "lb11",
        description: "LB11",
        max_connections: 10_000,
        max_services: 5,
        max_targets: 25,
        max_assigned_certificates: 10,
        monthly_net: 5.39,
    },
    LoadBalancerType {
        id: 2,
        name: "lb21",
        description: "LB21",
        max_connections: 20_000,
        max_services: 15,
        max_targets: 75,
        max_assigned_certificates: 25,
        monthly_net: 16.40,
    },
    LoadBalancerType {
        id: 3,
        name: "lb31",
        description: "LB31",
        max_connections: 40_000,
        max_services: 30,
        max_targets: 150,
        max_assigned_certificates: 50,
        monthly_net: 32.90,
    },
];

pub fn load_balancer_type(id_or_name: &str) -> Option<&'static LoadBalancerType> {
    LOAD_BALANCER_TYPES
        .iter()
        .find(|t| t.name == id_or_name || t.id.to_string() == id_or_name)
}

pub fn load_balancer_type_by_id(id: i64) -> Option<&'static LoadBalancerType> {
    LOAD_BALANCER_TYPES.iter().find(|t| t.id == id)
}

/// Prices are decimal strings in the API (`"1.0000000000"`).
fn price(net: f64) -> Value {
    json!({
        "net": format!("{net:.10}"),
        "gross": format!("{:.10}", net * 1.19),
    })
}

fn prices(monthly_net: f64, included_traffic: i64) -> Value {
    Value::Array(
        LOCATIONS
            .iter()
            .map(|l| {
                json!({
                    "location": l.name,
                    "price_hourly": price(monthly_net / 730.0),
                    "price_monthly": price(monthly_net),
                    "included_traffic": included_traffic,
                    "price_per_tb_traffic": price(1.0),
                })
            })
            .collect(),
    )
}

pub const LB_INCLUDED_TRAFFIC: i64 = 21_990_232_555_520;

impl LoadBalancerType {
    pub fn json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "max_connections": self.max_connections,
            "max_services": self.max_services,
            "max_targets": self.max_targets,
            "max_assigned_certificates": self.max_assigned_certificates,
            "deprecated": null,
            "prices": prices(self.monthly_net, LB_INCLUDED_TRAFFIC),
        })
    }
}

pub const SERVER_INCLUDED_TRAFFIC: i64 = 21_990_232_555_520;

/// The server type of every seeded server (a shared-vCPU x86 type).
pub fn server_type_json() -> Value {
    json!({
        "id": 104,
        "name": "cx22",
        "description": "CX22",
        "category": "shared",
        "cores": 2,
        "memory": 4.0,
        "disk": 40,
        "deprecated": false,
        "deprecation": null,
        "prices": prices(3.79, SERVER_INCLUDED_TRAFFIC),
        "storage_type": "local",
        "cpu_type": "shared",
        "architecture": "x86",
        "locations": LOCATIONS
            .iter()
            .filter(|l| l.network_zone == "eu-central")
            .map(|l| json!({"id": l.id, "name": l.name, "deprecation": null}))
            .collect::<Vec<_>>(),
    })
}

/// The image every seeded server was built from.
pub fn image_json(created: &str) -> Value {
    json!({
        "id": 161_547_269,
        "type": "system",
        "status": "available",
        "name": "ubuntu-24.04",
        "description": "Ubuntu 24.04",
        "image_size": null,
        "disk_size": 5,
        "created": created,
        "created_from": null,
        "bound_to": null,
        "os_flavor": "ubuntu",
        "os_version": "24.04",
        "rapid_deploy": true,
        "protection": {"delete": false},
        "deprecated": null,
        "deleted": null,
        "labels": {},
        "architecture": "x86",
    })
}

/// The datacenter of a location (`fsn1-dc14` style).
pub fn datacenter_json(location: &Location) -> Value {
    json!({
        "id": location.id * 10,
        "name": format!("{}-dc{}", location.name, 10 + location.id),
        "description": format!("{} virtual DC", location.city),
        "location": location.json(),
        "server_types": {
            "supported": [104],
            "available": [104],
            "available_for_migration": [104],
        },
    })
}
