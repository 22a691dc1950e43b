//! Server reflection: both listeners answer reflection v1 and the older v1alpha (which Python's
//! grpcio-reflection and older grpcurl speak) with the node's services.

use hanoi247::config::ClientConfig;
use tokio_stream::StreamExt;
use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

use crate::support::Network;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1alpha_client_lists_the_services_on_both_listeners() {
    let mut net = Network::new(&["VN", "FR"]).await;
    net.start("VN").await;
    let desk =
        hanoi247::cli::desk_client::channel(&ClientConfig::load(&net.client_config_path("VN")).unwrap())
            .unwrap();
    let peer = net.peer_channel("FR", "VN");
    for (listener, channel, service) in
        [("desk", desk, "hanoi247.v1.DeskService"), ("peer", peer, "hanoi247.v1.PeerService")]
    {
        let mut reflection = ServerReflectionClient::new(channel);
        let requests = [
            ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            },
            ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::FileContainingSymbol(service.into())),
            },
        ];
        let mut responses =
            reflection.server_reflection_info(tokio_stream::iter(requests)).await.unwrap().into_inner();
        let response = responses.next().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("{listener}: not a service list: {response:?}");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for expected in [service, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"] {
            assert!(names.iter().any(|n| n == expected), "{listener}: {expected} not in {names:?}");
        }
        let response = responses.next().await.unwrap().unwrap();
        let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response else {
            panic!("{listener}: no file for {service}: {response:?}");
        };
        assert!(!files.file_descriptor_proto.is_empty(), "{listener}: no descriptor for {service}");
    }
    net.stop("VN").await;
}
