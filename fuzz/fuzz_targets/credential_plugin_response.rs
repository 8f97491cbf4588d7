//! A credential provider plugin's stdout, as kubelet's exec protocol
//! defines it (`CredentialProviderResponse`): parsed and checked, never
//! a panic; an accepted answer's cache duration parses again.
#![no_main]

use keelson_agent::images::provider::parse_response;
use libfuzzer_sys::fuzz_target;

const V1: &str = "credentialprovider.kubelet.k8s.io/v1";

fuzz_target!(|data: &[u8]| {
    let _ = parse_response(V1, "plugin", "reg.example/app:1", data);
    let text = String::from_utf8_lossy(data);
    let _ = keelson_agent::images::duration::parse(&text);
    let _ = keelson_agent::images::provider::strip_tag(&text);
    let _ = keelson_agent::images::reference::validate(&text);
    let mut keyring = keelson_agent::images::secrets::Keyring::default();
    if keyring.add_dockerconfigjson(data).is_ok() {
        let _ = keyring.lookup("reg.example/app:1");
    }
});
