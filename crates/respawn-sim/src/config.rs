//! The static rules of one zone. A snapshot carries its config, so a restored
//! zone plays by exactly the rules it was saved under.

use crate::geom::{Point, Rect};

/// Rules and layout of a zone. Distances are centimetres, durations are ticks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneConfig {
    /// Numeric zone id; part of every event id.
    pub zone_id: u32,
    pub name: String,
    /// Seed of the zone's random generator (item spawns, NPC wandering).
    pub seed: u64,
    pub width: i32,
    pub height: i32,
    pub obstacles: Vec<Rect>,
    /// Collision radius of players and NPCs.
    pub body_radius: i32,
    /// Longest accepted velocity per tick; a faster move is rejected as cheating.
    pub max_speed: i32,
    pub attack_range: i32,
    pub attack_cooldown_ticks: u32,
    pub pickup_range: i32,
    pub respawn_ticks: u32,
    pub npc_count: u32,
    pub npc_speed: i32,
    pub npc_aggro_range: i32,
    pub item_spawn_interval_ticks: u32,
    pub max_items: u32,
    /// Distinct item kinds a player may carry (gold does not take a slot).
    pub inventory_slots: u32,
    /// Ways out to other zones.
    pub exits: Vec<Exit>,
}

/// An area of the field that leads to another zone: a living player whose
/// position enters it leaves for zone `to`, arriving at `arrival` there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub area: Rect,
    /// The other zone's name.
    pub to: String,
    pub arrival: Point,
}

/// Most exits a zone may have.
pub const MAX_EXITS: usize = 16;

/// A config that cannot be played.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::error::Error for ConfigError {}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid zone config: {}", self.0)
    }
}

impl ZoneConfig {
    /// A 200 m x 200 m field with four buildings, sized for thousands of players.
    pub fn standard(zone_id: u32, name: &str, seed: u64) -> Self {
        Self {
            zone_id,
            name: name.to_owned(),
            seed,
            width: 20_000,
            height: 20_000,
            obstacles: standard_buildings(20_000, 20_000),
            body_radius: 40,
            max_speed: 30,
            attack_range: 250,
            attack_cooldown_ticks: 10,
            pickup_range: 150,
            respawn_ticks: 100,
            npc_count: 100,
            npc_speed: 15,
            npc_aggro_range: 800,
            item_spawn_interval_ticks: 5,
            max_items: 300,
            inventory_slots: 8,
            exits: Vec::new(),
        }
    }

    /// Resizes the field, laying the standard buildings out to scale.
    pub fn resized(mut self, width: i32, height: i32) -> Self {
        self.width = width;
        self.height = height;
        self.obstacles = standard_buildings(width, height);
        self
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        if !respawn_names::valid_zone_name(&self.name) {
            return err(format!("zone name must be 1..=64 of A-Z a-z 0-9 _ - ., got {:?}", self.name));
        }
        if !(1_000..=1_000_000).contains(&self.width) || !(1_000..=1_000_000).contains(&self.height) {
            return err(format!("zone size must be 1000..=1000000 cm per side, got {}x{}", self.width, self.height));
        }
        if self.body_radius <= 0 || self.body_radius * 4 > self.width.min(self.height) {
            return err(format!("body_radius {} does not fit the zone", self.body_radius));
        }
        for (name, v) in [
            ("max_speed", self.max_speed),
            ("attack_range", self.attack_range),
            ("pickup_range", self.pickup_range),
            ("npc_speed", self.npc_speed),
            ("npc_aggro_range", self.npc_aggro_range),
        ] {
            if !(1..=100_000).contains(&v) {
                return err(format!("{name} must be 1..=100000, got {v}"));
            }
        }
        if self.item_spawn_interval_ticks == 0 {
            return err("item_spawn_interval_ticks must be at least 1".into());
        }
        if self.npc_count > 10_000 || self.max_items > 100_000 || self.inventory_slots > 64 {
            return err("npc_count <= 10000, max_items <= 100000, inventory_slots <= 64".into());
        }
        for o in &self.obstacles {
            if o.w <= 0 || o.h <= 0 || o.x < 0 || o.y < 0 || o.x + o.w > self.width || o.y + o.h > self.height {
                return err(format!("obstacle {o:?} is empty or outside the zone"));
            }
        }
        if self.obstacles.len() > 1_000 {
            return err("at most 1000 obstacles".into());
        }
        if self.exits.len() > MAX_EXITS {
            return err(format!("at most {MAX_EXITS} exits"));
        }
        for e in &self.exits {
            let a = e.area;
            if a.w <= 0 || a.h <= 0 || a.x < 0 || a.y < 0 || a.x + a.w > self.width || a.y + a.h > self.height {
                return err(format!("exit to {:?}: its area {a:?} is empty or outside the zone", e.to));
            }
            if e.to.is_empty() || e.to.len() > 64 || e.to == self.name {
                return err(format!("exit to {:?}: the name of another zone (1..=64 bytes)", e.to));
            }
            if !(0..=1_000_000).contains(&e.arrival.x) || !(0..=1_000_000).contains(&e.arrival.y) {
                return err(format!("exit to {:?}: arrival {:?} is off any field", e.to, e.arrival));
            }
        }
        Ok(())
    }

    /// The exit whose area holds `p`, if any.
    pub fn exit_at(&self, p: Point) -> Option<&Exit> {
        self.exits.iter().find(|e| e.area.contains(p))
    }

    /// Whether a body centred at `p` is inside the bounds and clear of obstacles.
    pub fn is_free(&self, p: Point) -> bool {
        let r = self.body_radius;
        p.x >= r
            && p.y >= r
            && p.x <= self.width - r
            && p.y <= self.height - r
            && !self.obstacles.iter().any(|o| o.hits_circle(p, r))
    }
}

/// Four buildings at fixed fractions of the field (in twentieths).
fn standard_buildings(width: i32, height: i32) -> Vec<Rect> {
    let (w, h) = (width / 20, height / 20);
    vec![
        Rect::new(4 * w, 4 * h, 2 * w, h),
        Rect::new(14 * w, 4 * h, w, 3 * h),
        Rect::new(4 * w, 14 * h, 3 * w, h),
        Rect::new(13 * w, 13 * h, 2 * w, 2 * h),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_config_is_valid() {
        ZoneConfig::standard(1, "meadow", 1).validate().expect("valid");
    }

    #[test]
    fn bad_configs_are_refused_with_a_reason() {
        let mut c = ZoneConfig::standard(1, "meadow", 1);
        c.max_speed = 0;
        assert!(c.validate().unwrap_err().to_string().contains("max_speed"));
        let mut c = ZoneConfig::standard(1, "meadow", 1);
        c.obstacles.push(Rect::new(19_999, 0, 100, 100));
        assert!(c.validate().unwrap_err().to_string().contains("obstacle"));
        let mut c = ZoneConfig::standard(1, "", 1);
        c.name.clear();
        assert!(c.validate().is_err());
    }
}
