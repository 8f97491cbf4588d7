//! Writing the webhook CA into Keelson's webhook configurations: every
//! webhook in them that calls Keelson's webhook Service gets `caBundle` =
//! the CA, so the API server trusts the self-made serving certificate.
//! Webhooks calling anything else are left alone. Conditional writes
//! (resourceVersion); a conflict is retried on the next round.

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use kube::Client;
use kube::api::{Api, PostParams};

/// Keelson's webhook configurations (deploy/webhooks.yaml).
pub const MUTATING: &str = "keelson-mutating-webhook-configuration";
pub const VALIDATING: &str = "keelson-validating-webhook-configuration";

/// Sets `ca` on a client config that calls `namespace/service`; whether it
/// changed.
pub fn inject(config: &mut WebhookClientConfig, service: &str, namespace: &str, ca: &[u8]) -> bool {
    let ours = config
        .service
        .as_ref()
        .is_some_and(|s| s.name == service && s.namespace == namespace);
    if !ours || config.ca_bundle.as_ref().map(|b| b.0.as_slice()) == Some(ca) {
        return false;
    }
    config.ca_bundle = Some(ByteString(ca.to_vec()));
    true
}

/// The CA as the caBundle carries it (base64 of the PEM, once serialised).
pub fn describe(ca: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(ca);
    format!("{}…", &b64[..b64.len().min(16)])
}

/// One round over both configurations; how many were updated. A missing
/// configuration is not an error (nothing to inject into).
pub async fn sync(
    client: &Client,
    service: &str,
    namespace: &str,
    ca: &[u8],
) -> Result<usize, kube::Error> {
    let mut updated = 0;
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    if let Some(mut c) = mutating.get_opt(MUTATING).await? {
        let mut changed = false;
        for w in c.webhooks.iter_mut().flatten() {
            changed |= inject(&mut w.client_config, service, namespace, ca);
        }
        if changed {
            mutating
                .replace(MUTATING, &PostParams::default(), &c)
                .await?;
            updated += 1;
        }
    }
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    if let Some(mut c) = validating.get_opt(VALIDATING).await? {
        let mut changed = false;
        for w in c.webhooks.iter_mut().flatten() {
            changed |= inject(&mut w.client_config, service, namespace, ca);
        }
        if changed {
            validating
                .replace(VALIDATING, &PostParams::default(), &c)
                .await?;
            updated += 1;
        }
    }
    updated += sync_conversions(client, service, namespace, ca).await?;
    if updated > 0 {
        tracing::info!(configurations = updated, ca = %describe(ca), "webhook caBundle written");
    }
    Ok(updated)
}

/// The CRDs Keelson ships with a conversion webhook calling
/// `namespace/service` get the CA too; how many were updated.
async fn sync_conversions(
    client: &Client,
    service: &str,
    namespace: &str,
    ca: &[u8],
) -> Result<usize, kube::Error> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut updated = 0;
    for shipped in keelson_api::crds() {
        if shipped
            .spec
            .conversion
            .as_ref()
            .is_none_or(|c| c.webhook.is_none())
        {
            continue;
        }
        let name = shipped.metadata.name.clone().unwrap_or_default();
        let Some(mut crd) = api.get_opt(&name).await? else {
            continue;
        };
        let Some(cfg) = crd
            .spec
            .conversion
            .as_mut()
            .and_then(|c| c.webhook.as_mut())
            .and_then(|w| w.client_config.as_mut())
        else {
            continue;
        };
        let ours = cfg
            .service
            .as_ref()
            .is_some_and(|s| s.name == service && s.namespace == namespace);
        if !ours || cfg.ca_bundle.as_ref().map(|b| b.0.as_slice()) == Some(ca) {
            continue;
        }
        cfg.ca_bundle = Some(ByteString(ca.to_vec()));
        api.replace(&name, &PostParams::default(), &crd).await?;
        updated += 1;
    }
    Ok(updated)
}
