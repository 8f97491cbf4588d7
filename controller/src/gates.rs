//! `--feature-gates` with OpenKruise's gate names and defaults
//! (`pkg/features` upstream), including how gates imply each other
//! (without PodWebhook the webhook-based gates are off; without
//! KruiseDaemon the node-based ones; pre-download implies
//! ImagePullJobGate). An unknown name or a value other than true/false is
//! an error, as with kube-components' feature gates.

use std::collections::BTreeMap;

/// Every gate with its default.
pub const GATES: &[(&str, bool)] = &[
    ("CloneSetEventHandlerOptimization", false),
    ("CloneSetPartitionRollback", false),
    ("CloneSetShortHash", false),
    ("DaemonWatchingPod", true),
    ("DeletionProtectionForCRDCascadingGate", false),
    ("EnablePodProbeMarkerOnServerless", false),
    ("EnableExternalCerts", false),
    ("EnhancedLivenessProbe", false),
    ("ForceDeleteTimeoutExpectationGate", false),
    ("ImagePullJobGate", false),
    ("InPlacePodVerticalScaling", false),
    ("InPlaceUpdateEnvFromMetadata", true),
    ("InPlaceWorkloadVerticalScaling", false),
    ("KruiseDaemon", true),
    ("KruisePodReadinessGate", false),
    ("PodIndexLabel", true),
    ("PodProbeMarkerGate", true),
    ("PodUnavailableBudgetDeleteGate", true),
    ("PodUnavailableBudgetUpdateGate", false),
    ("PodWebhook", true),
    ("PreDownloadImageForDaemonSetUpdate", false),
    ("PreDownloadImageForInPlaceUpdate", false),
    ("PreparingUpdateAsUpdate", false),
    ("RecreatePodWhenChangeVCTInCloneSetGate", false),
    ("ResourceDistributionGate", false),
    ("ResourcesDeletionProtection", false),
    ("SidecarSetPatchPodMetadataDefaultsAllowed", false),
    ("SidecarTerminator", false),
    ("StatefulSetAutoDeletePVC", true),
    ("StatefulSetAutoResizePVCGate", false),
    ("StatefulSetStartOrdinal", false),
    ("TemplateNoDefaults", false),
    ("WorkloadSpread", true),
];

/// Why `--feature-gates` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    #[error("unrecognized feature gate: {0}")]
    Unknown(String),
    #[error("invalid value of {name}={value}, must be true or false")]
    Value { name: String, value: String },
    #[error("missing bool value for {0}")]
    Missing(String),
}

/// The gates in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureGates(BTreeMap<&'static str, bool>);

impl FeatureGates {
    /// Parses `A=true,B=false` over the defaults, then applies the
    /// implications. `AllAlpha=` / `AllBeta=` set every alpha / beta gate
    /// not named explicitly, as kube's feature gates do (in OpenKruise every
    /// gate off by default is alpha and every gate on by default is beta:
    /// `pkg/features/kruise_features.go`).
    pub fn parse(spec: &str) -> Result<Self, GateError> {
        let mut gates: BTreeMap<&'static str, bool> = GATES.iter().copied().collect();
        let mut explicit: Vec<&'static str> = vec![];
        let mut all: Vec<(bool, bool)> = vec![];
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let Some((name, value)) = item.split_once('=') else {
                return Err(GateError::Missing(item.to_string()));
            };
            let (name, value) = (name.trim(), value.trim());
            let on = |value: &str| match value.to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(GateError::Value {
                    name: name.into(),
                    value: value.into(),
                }),
            };
            if name == "AllAlpha" || name == "AllBeta" {
                // (default of the gates it sets, value)
                all.push((name == "AllBeta", on(value)?));
                continue;
            }
            let Some((key, _)) = GATES.iter().find(|(g, _)| *g == name) else {
                return Err(GateError::Unknown(name.to_string()));
            };
            explicit.push(key);
            let on = match value.to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(GateError::Value {
                        name: name.into(),
                        value: value.into(),
                    });
                }
            };
            gates.insert(key, on);
        }
        for (default, value) in all {
            for (name, d) in GATES {
                if *d == default && !explicit.contains(name) {
                    gates.insert(name, value);
                }
            }
        }
        let off = |gates: &mut BTreeMap<&'static str, bool>, names: &[&'static str]| {
            for n in names {
                gates.insert(n, false);
            }
        };
        if !gates["PodWebhook"] {
            off(
                &mut gates,
                &[
                    "KruisePodReadinessGate",
                    "PodUnavailableBudgetDeleteGate",
                    "PodUnavailableBudgetUpdateGate",
                    "WorkloadSpread",
                    "SidecarSetPatchPodMetadataDefaultsAllowed",
                    "EnhancedLivenessProbe",
                    "EnablePodProbeMarkerOnServerless",
                ],
            );
        }
        if !gates["KruiseDaemon"] {
            off(
                &mut gates,
                &[
                    "PreDownloadImageForInPlaceUpdate",
                    "DaemonWatchingPod",
                    "InPlaceUpdateEnvFromMetadata",
                    "PreDownloadImageForDaemonSetUpdate",
                    "PodProbeMarkerGate",
                    "SidecarTerminator",
                    "ImagePullJobGate",
                    "EnhancedLivenessProbe",
                ],
            );
        }
        if gates["PreDownloadImageForInPlaceUpdate"] || gates["PreDownloadImageForDaemonSetUpdate"]
        {
            gates.insert("ImagePullJobGate", true);
        }
        if !gates["ResourcesDeletionProtection"] {
            off(&mut gates, &["DeletionProtectionForCRDCascadingGate"]);
        }
        Ok(Self(gates))
    }

    /// Whether gate `name` is on (unknown names are off).
    pub fn enabled(&self, name: &str) -> bool {
        self.0.get(name).copied().unwrap_or(false)
    }

    /// `name=value` for every gate, for the start-up log.
    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_alpha_and_all_beta_set_every_gate_not_named() {
        // OpenKruise's own end-to-end setting.
        let g = FeatureGates::parse("AllAlpha=true,AllBeta=true,TemplateNoDefaults=false").unwrap();
        for gate in [
            "StatefulSetStartOrdinal",
            "ResourceDistributionGate",
            "ImagePullJobGate",
            "SidecarTerminator",
            "ResourcesDeletionProtection",
            "KruiseDaemon",
        ] {
            assert!(g.enabled(gate), "{gate}");
        }
        assert!(!g.enabled("TemplateNoDefaults"), "named explicitly: wins");
        // Explicit names win whatever their position.
        let g = FeatureGates::parse("SidecarTerminator=false,AllAlpha=true").unwrap();
        assert!(!g.enabled("SidecarTerminator") && g.enabled("ImagePullJobGate"));
        let g = FeatureGates::parse("AllBeta=false").unwrap();
        assert!(!g.enabled("KruiseDaemon") && !g.enabled("ImagePullJobGate"));
        assert!(matches!(
            FeatureGates::parse("AllAlpha=yes"),
            Err(GateError::Value { .. })
        ));
    }

    #[test]
    fn defaults_overrides_and_implications() {
        let g = FeatureGates::parse("").unwrap();
        assert!(g.enabled("KruiseDaemon") && g.enabled("PodWebhook"));
        assert!(!g.enabled("ImagePullJobGate") && !g.enabled("StatefulSetStartOrdinal"));
        assert!(
            !g.enabled("ResourcesDeletionProtection") && !g.enabled("ResourceDistributionGate"),
            "off by default in OpenKruise v1.9"
        );

        let g =
            FeatureGates::parse("StatefulSetStartOrdinal=true, SidecarTerminator=TRUE").unwrap();
        assert!(g.enabled("StatefulSetStartOrdinal") && g.enabled("SidecarTerminator"));

        let g = FeatureGates::parse("PreDownloadImageForInPlaceUpdate=true").unwrap();
        assert!(
            g.enabled("ImagePullJobGate"),
            "pre-download needs image pull jobs"
        );

        let g =
            FeatureGates::parse("KruiseDaemon=false,ImagePullJobGate=true,SidecarTerminator=true")
                .unwrap();
        assert!(!g.enabled("ImagePullJobGate") && !g.enabled("SidecarTerminator"));

        let g = FeatureGates::parse("PodWebhook=false").unwrap();
        assert!(!g.enabled("WorkloadSpread") && !g.enabled("PodUnavailableBudgetDeleteGate"));
        assert!(g.describe().contains("PodWebhook=false"));
    }

    #[test]
    fn unknown_names_and_bad_values_are_errors() {
        assert_eq!(
            FeatureGates::parse("NoSuchGate=true"),
            Err(GateError::Unknown("NoSuchGate".into()))
        );
        assert!(matches!(
            FeatureGates::parse("PodWebhook=yes"),
            Err(GateError::Value { .. })
        ));
        assert_eq!(
            FeatureGates::parse("PodWebhook"),
            Err(GateError::Missing("PodWebhook".into()))
        );
    }
}
