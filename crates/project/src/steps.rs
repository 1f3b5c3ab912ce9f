//! The names of a build's steps. Built-in steps are variants; a project's
//! own `[[steps]]` are `Custom`. Their text forms appear in farm.toml
//! (`step:<name>` inputs), `farm log`, `--rerun`, logs and the step keys,
//! so they are spelled once, here.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StepId {
    Frontend,
    Backend,
    Models,
    /// The TypeScript API types generated from the backend's OpenAPI schema.
    Types,
    Images,
    /// docker-compose.yml and Kubernetes manifests.
    Deploy,
    /// The frontend's output with its images optimised (`[frontend] optimize-images`).
    OptimizeImages,
    /// A `[[steps]]` entry of farm.toml.
    Custom(String),
}

impl StepId {
    pub const BUILTIN: [StepId; 7] = [
        StepId::Frontend,
        StepId::Backend,
        StepId::Models,
        StepId::Types,
        StepId::Images,
        StepId::Deploy,
        StepId::OptimizeImages,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            StepId::Frontend => "frontend",
            StepId::Backend => "backend",
            StepId::Models => "models",
            StepId::Types => "types",
            StepId::Images => "images",
            StepId::Deploy => "deploy",
            StepId::OptimizeImages => "optimize-images",
            StepId::Custom(name) => name,
        }
    }

    /// The built-in step of this name, else a custom step.
    pub fn parse(name: &str) -> StepId {
        Self::BUILTIN
            .into_iter()
            .find(|s| s.as_str() == name)
            .unwrap_or_else(|| StepId::Custom(name.to_string()))
    }

    pub fn is_builtin(name: &str) -> bool {
        !matches!(Self::parse(name), StepId::Custom(_))
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for StepId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for StepId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Ok(StepId::parse(&name))
    }
}

#[cfg(test)]
mod tests {
    use super::StepId;

    #[test]
    fn names_round_trip() {
        for s in StepId::BUILTIN {
            assert_eq!(StepId::parse(s.as_str()), s);
        }
        assert_eq!(StepId::parse("lint"), StepId::Custom("lint".into()));
        assert_eq!(StepId::Custom("lint".into()).to_string(), "lint");
        assert!(StepId::is_builtin("deploy") && !StepId::is_builtin("lint"));
    }
}
