//! The fake through the client kz uses, the `hcloud` crate: its requests must pass the fake's
//! checks and the fake's answers must deserialize into its models. The crate is generated from
//! an older revision of the same document, so this catches drift the schema check cannot.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use hcloud::apis::configuration::Configuration;
use hcloud::apis::{
    Error, actions_api, load_balancer_types_api, load_balancers_api, locations_api, networks_api,
    servers_api,
};
use hcloud::models;
use kz_test_hcloud::FakeHcloud;

fn config(api: &FakeHcloud) -> Configuration {
    let mut config = Configuration::new();
    config
        .base_path_mapping
        .insert("https://api.hetzner.cloud/v1".into(), api.url());
    config.bearer_access_token = Some(api.token().to_owned());
    config
}

fn tcp_service(port: i32) -> models::LoadBalancerService {
    models::LoadBalancerService::new(
        port,
        models::LoadBalancerServiceHealthCheck::new(
            15,
            port,
            models::load_balancer_service_health_check::Protocol::Tcp,
            3,
            10,
        ),
        port,
        models::load_balancer_service::Protocol::Tcp,
        false,
    )
}

async fn wait(config: &Configuration, id: i64) -> models::Action {
    for _ in 0..200 {
        let action = actions_api::get_action(config, actions_api::GetActionParams { id })
            .await
            .unwrap()
            .action;
        if action.status != models::action::Status::Running {
            return *action;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("action {id} never finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hcloud_crate_reads_and_writes_the_fake() {
    let api = FakeHcloud::start();
    api.seed_keybuzz();
    api.add_servers("extra", 60);
    let config = config(&api);

    // Reads: every list paged as the crate's callers page it.
    let mut servers = Vec::new();
    let mut page = Some(1);
    while let Some(p) = page {
        let resp = servers_api::list_servers(
            &config,
            servers_api::ListServersParams {
                page: Some(p),
                per_page: Some(50),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        servers.extend(resp.servers);
        page = resp.meta.pagination.next_page;
    }
    assert_eq!(servers.len(), 72);
    let haproxy = servers_api::list_servers(
        &config,
        servers_api::ListServersParams {
            label_selector: Some("role=haproxy".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .servers;
    assert_eq!(haproxy.len(), 2);
    let server =
        servers_api::get_server(&config, servers_api::GetServerParams { id: haproxy[0].id })
            .await
            .unwrap();
    assert_eq!(server.server.unwrap().name, "haproxy-01");
    let networks = networks_api::list_networks(
        &config,
        networks_api::ListNetworksParams {
            name: Some("keybuzz-private".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .networks;
    let network = networks[0].id;
    networks_api::get_network(&config, networks_api::GetNetworkParams { id: network })
        .await
        .unwrap();
    locations_api::list_locations(&config, Default::default())
        .await
        .unwrap();
    load_balancer_types_api::list_load_balancer_types(&config, Default::default())
        .await
        .unwrap();

    // Create with services and targets.
    let mut request = models::CreateLoadBalancerRequest::new("lb11".into(), "lb-haproxy".into());
    request.location = Some("fsn1".into());
    request.network = Some(network);
    request.labels = Some([("managed-by".to_owned(), "kz".to_owned())].into());
    request.services = Some(vec![tcp_service(5432)]);
    let mut target =
        models::LoadBalancerAddTarget::new(models::load_balancer_add_target::Type::Server);
    target.server = Some(Box::new(models::ResourceId::new(haproxy[0].id)));
    target.use_private_ip = Some(true);
    request.targets = Some(vec![target]);
    let created = load_balancers_api::create_load_balancer(
        &config,
        load_balancers_api::CreateLoadBalancerParams {
            create_load_balancer_request: request,
        },
    )
    .await
    .unwrap();
    let lb = created.load_balancer.id;
    assert_eq!(created.action.status, models::action::Status::Running);
    let done = wait(&config, created.action.id).await;
    assert_eq!(done.status, models::action::Status::Success);

    // Actions.
    let mut target =
        models::LoadBalancerAddTarget::new(models::load_balancer_add_target::Type::Server);
    target.server = Some(Box::new(models::ResourceId::new(haproxy[1].id)));
    target.use_private_ip = Some(true);
    let added = load_balancers_api::add_target(
        &config,
        load_balancers_api::AddTargetParams {
            id: lb,
            load_balancer_add_target: target,
        },
    )
    .await
    .unwrap();
    wait(&config, added.action.id).await;
    let mut update = models::UpdateLoadBalancerService::new(5432);
    update.destination_port = Some(5433);
    let updated = load_balancers_api::update_service(
        &config,
        load_balancers_api::UpdateServiceParams {
            id: lb,
            update_load_balancer_service: update,
        },
    )
    .await
    .unwrap();
    wait(&config, updated.action.id).await;
    let disabled = load_balancers_api::disable_public_interface_of_load_balancer(
        &config,
        load_balancers_api::DisablePublicInterfaceOfLoadBalancerParams { id: lb },
    )
    .await
    .unwrap();
    wait(&config, disabled.action.id).await;
    let action = load_balancers_api::get_load_balancer_action(
        &config,
        load_balancers_api::GetLoadBalancerActionParams {
            id: disabled.action.id,
        },
    )
    .await
    .unwrap();
    assert_eq!(action.action.command, "disable_public_interface");

    let got = load_balancers_api::get_load_balancer(
        &config,
        load_balancers_api::GetLoadBalancerParams { id: lb },
    )
    .await
    .unwrap()
    .load_balancer;
    assert_eq!(got.targets.len(), 2);
    assert_eq!(got.services[0].destination_port, 5433);
    assert!(!got.public_net.enabled);
    let listed = load_balancers_api::list_load_balancers(
        &config,
        load_balancers_api::ListLoadBalancersParams {
            label_selector: Some("managed-by=kz".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(listed.load_balancers.len(), 1);

    // An error decodes into the crate's error model.
    let err = load_balancers_api::add_service(
        &config,
        load_balancers_api::AddServiceParams {
            id: lb,
            load_balancer_service: tcp_service(5432),
        },
    )
    .await
    .unwrap_err();
    let Error::ResponseError(content) = err else {
        panic!("expected a response error, got {err:?}");
    };
    assert_eq!(content.status.as_u16(), 422);
    let Some(load_balancers_api::AddServiceError::DefaultResponse(body)) = content.entity else {
        panic!("error body did not decode: {}", content.content);
    };
    assert_eq!(body.error.code, "source_port_already_used");

    load_balancers_api::delete_load_balancer(
        &config,
        load_balancers_api::DeleteLoadBalancerParams { id: lb },
    )
    .await
    .unwrap();
    assert!(api.load_balancer_names().is_empty());
}
