//! The zone: players, NPCs and items on a 2D field, advanced one tick at a time.

use std::collections::BTreeMap;

use crate::character::Character;
use crate::command::{Command, CommandKind, RejectReason};
use crate::config::ZoneConfig;
use crate::event::{DomainEvent, EventId, EventKind, Killer};
use crate::geom::{step_towards, within, Point};
use crate::grid::CellGrid;
use crate::ids::{EntityId, ItemKind, PlayerId};
use crate::rng::Rng;
use respawn_names::valid_name;

pub const PLAYER_BASE_HP: i32 = 100;
pub const NPC_HP: i32 = 60;
const NPC_DAMAGE: i32 = 6;
const NPC_XP: u64 = 25;
const NPC_GOLD: u64 = 5;
const PLAYER_KILL_XP: u64 = 50;
const NPC_WANDER_RADIUS: i32 = 1_500;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Player {
    pub id: PlayerId,
    pub entity: EntityId,
    pub name: String,
    pub pos: Point,
    pub velocity: Point,
    pub hp: i32,
    pub level: u32,
    pub xp: u64,
    pub gold: u64,
    pub inventory: BTreeMap<ItemKind, u32>,
    /// First tick at which the player may attack again.
    pub attack_ready_at: u64,
    /// Set while dead: the tick of the respawn.
    pub respawn_at: Option<u64>,
    /// The incarnation of the character (see [`Character::incarnation`]).
    pub incarnation: u64,
}

impl Player {
    /// The durable part of this player, as standing in `zone`.
    pub fn character(&self, zone: &str) -> Character {
        Character {
            incarnation: self.incarnation,
            level: self.level,
            xp: self.xp,
            gold: self.gold,
            inventory: self.inventory.clone(),
            place: Some((zone.to_owned(), self.pos)),
        }
    }

    pub fn max_hp(&self) -> i32 {
        max_hp_for(self.level)
    }

    pub fn is_alive(&self) -> bool {
        self.respawn_at.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Npc {
    pub entity: EntityId,
    pub pos: Point,
    pub home: Point,
    pub wander_to: Point,
    pub hp: i32,
    pub attack_ready_at: u64,
    pub respawn_at: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneItem {
    pub entity: EntityId,
    pub kind: ItemKind,
    pub amount: u32,
    pub pos: Point,
}

/// A command that was not applied, addressed to the player who sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub player: PlayerId,
    pub seq: u32,
    pub reason: RejectReason,
}

/// What one tick produced besides the new state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TickOutput {
    pub tick: u64,
    pub events: Vec<DomainEvent>,
    /// Per-player answers to refused commands; what each client sees of the
    /// field is computed from the state by [`crate::view`].
    pub rejections: Vec<Rejection>,
}

/// One zone's complete state. Everything that affects the future lives here,
/// and a snapshot encodes all of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    pub(crate) config: ZoneConfig,
    /// The timeline this state belongs to (part of every event id).
    pub(crate) epoch: u64,
    pub(crate) tick: u64,
    pub(crate) rng: Rng,
    pub(crate) next_entity: EntityId,
    pub(crate) players: BTreeMap<PlayerId, Player>,
    /// Derived index (entity -> player); rebuilt on decode, never encoded.
    pub(crate) player_entities: BTreeMap<EntityId, PlayerId>,
    pub(crate) npcs: BTreeMap<EntityId, Npc>,
    pub(crate) items: BTreeMap<EntityId, ZoneItem>,
    /// Players who left recently: the incarnation they left with and the
    /// tick they left at, kept [`DEPARTURE_MEMORY_TICKS`] so that the same
    /// stay cannot be entered twice.
    pub(crate) departures: BTreeMap<PlayerId, Departure>,
    /// Scratch space for NPC targeting; not state, never encoded or compared.
    pub(crate) player_grid: Scratch<CellGrid<PlayerId>>,
}

/// A player's last departure from the zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Departure {
    pub incarnation: u64,
    pub tick: u64,
}

/// How long (10 minutes at 20 ticks a second) a zone remembers a departure:
/// far longer than a character ticket lives.
pub const DEPARTURE_MEMORY_TICKS: u64 = 12_000;

/// Working memory kept between ticks only to reuse its allocations. It holds
/// no state, so it takes no part in equality.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scratch<T>(pub(crate) T);

impl<T> PartialEq for Scratch<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> Eq for Scratch<T> {}

pub fn max_hp_for(level: u32) -> i32 {
    PLAYER_BASE_HP.saturating_add(10i32.saturating_mul(level.saturating_sub(1).min(10_000) as i32))
}

/// Total XP at which `level` starts: 0, 100, 300, 600, ...
pub fn xp_for_level(level: u32) -> u64 {
    let l = u64::from(level.max(1));
    50 * l * (l - 1)
}

fn player_damage(level: u32) -> i32 {
    10 + 2 * level.min(1_000) as i32
}

/// Outcome of a blow: whether it killed.
enum Blow {
    Wounded,
    Killed,
}

impl Zone {
    /// A fresh zone at tick 0 with its NPCs placed. The config must be valid.
    pub fn new(config: ZoneConfig) -> Result<Self, crate::ConfigError> {
        config.validate()?;
        let mut zone = Zone {
            rng: Rng::new(config.seed),
            config,
            epoch: 0,
            tick: 0,
            next_entity: 1,
            players: BTreeMap::new(),
            player_entities: BTreeMap::new(),
            npcs: BTreeMap::new(),
            items: BTreeMap::new(),
            departures: BTreeMap::new(),
            player_grid: Scratch::default(),
        };
        for _ in 0..zone.config.npc_count {
            let entity = zone.alloc_entity();
            let pos = zone.random_free_point();
            zone.npcs.insert(
                entity,
                Npc { entity, pos, home: pos, wander_to: pos, hp: NPC_HP, attack_ready_at: 0, respawn_at: None },
            );
        }
        Ok(zone)
    }

    pub fn config(&self) -> &ZoneConfig {
        &self.config
    }

    /// Starts a new timeline: a fresh world, or a rollback to an older point.
    pub fn set_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The last tick that was simulated (0 before the first).
    pub fn tick_number(&self) -> u64 {
        self.tick
    }

    pub fn players(&self) -> &BTreeMap<PlayerId, Player> {
        &self.players
    }

    pub fn player(&self, id: PlayerId) -> Option<&Player> {
        self.players.get(&id)
    }

    /// The player behind a field entity, if it is a player.
    pub fn player_by_entity(&self, entity: EntityId) -> Option<&Player> {
        self.player_entities.get(&entity).and_then(|id| self.players.get(id))
    }

    pub fn npcs(&self) -> &BTreeMap<EntityId, Npc> {
        &self.npcs
    }

    pub fn items(&self) -> &BTreeMap<EntityId, ZoneItem> {
        &self.items
    }

    /// Advances the zone by one tick, applying `commands` in order first.
    pub fn tick(&mut self, commands: &[Command]) -> TickOutput {
        self.tick += 1;
        let mut out = TickOutput { tick: self.tick, ..TickOutput::default() };
        for command in commands {
            if let Err(reason) = self.apply(command, &mut out) {
                if reason.is_cheat() {
                    self.emit(&mut out, EventKind::CheatRejected { player: command.player, reason });
                }
                out.rejections.push(Rejection { player: command.player, seq: command.seq, reason });
            }
        }
        self.move_players();
        self.travel(&mut out);
        self.run_npcs(&mut out);
        self.respawn(&mut out);
        self.spawn_items();
        self.forget_old_departures();
        out
    }

    fn forget_old_departures(&mut self) {
        if self.tick.is_multiple_of(200) {
            let tick = self.tick;
            self.departures.retain(|_, d| tick.saturating_sub(d.tick) < DEPARTURE_MEMORY_TICKS);
        }
    }

    /// Records an event, tagged with the incarnation of the character it is
    /// about (which must still be in the zone).
    fn emit(&self, out: &mut TickOutput, kind: EventKind) {
        let index = out.events.len() as u32;
        let id = EventId { zone: self.config.zone_id, epoch: self.epoch, tick: self.tick, index };
        let incarnation = kind.player().and_then(|p| self.players.get(&p)).map_or(0, |p| p.incarnation);
        out.events.push(DomainEvent { id, incarnation, kind });
    }

    pub fn departures(&self) -> &BTreeMap<PlayerId, Departure> {
        &self.departures
    }

    /// Records that `pid` left with `character` (travelling to another zone
    /// or not) and takes it off the field.
    fn depart(&mut self, pid: PlayerId, character: Character, travel: Option<String>, out: &mut TickOutput) {
        self.emit(out, EventKind::PlayerLeft { player: pid, character, travel });
        if let Some(p) = self.players.remove(&pid) {
            self.player_entities.remove(&p.entity);
            self.departures.insert(pid, Departure { incarnation: p.incarnation, tick: self.tick });
        }
    }

    fn at_exit(&self, p: Point) -> bool {
        self.config.exit_at(p).is_some()
    }

    /// Living players who walked into an exit leave for its zone, their
    /// place the arrival point there.
    fn travel(&mut self, out: &mut TickOutput) {
        if self.config.exits.is_empty() {
            return;
        }
        let leaving: Vec<(PlayerId, Character, String)> = self
            .players
            .values()
            .filter(|p| p.is_alive())
            .filter_map(|p| {
                let exit = self.config.exit_at(p.pos)?;
                let mut character = p.character(&exit.to);
                character.place = Some((exit.to.clone(), exit.arrival));
                Some((p.id, character, exit.to.clone()))
            })
            .collect();
        for (pid, character, to) in leaving {
            self.depart(pid, character, Some(to), out);
        }
    }

    fn alloc_entity(&mut self) -> EntityId {
        let id = self.next_entity;
        self.next_entity = self.next_entity.wrapping_add(1).max(1);
        id
    }

    fn random_free_point(&mut self) -> Point {
        let r = self.config.body_radius;
        for _ in 0..64 {
            let p =
                Point::new(self.rng.range_i32(r, self.config.width - r), self.rng.range_i32(r, self.config.height - r));
            if self.config.is_free(p) && !self.at_exit(p) {
                return p;
            }
        }
        Point::new(r, r)
    }

    fn apply(&mut self, command: &Command, out: &mut TickOutput) -> Result<(), RejectReason> {
        let pid = command.player;
        match &command.kind {
            CommandKind::Join { name, character } => {
                if self.players.contains_key(&pid) {
                    return Err(RejectReason::AlreadyJoined);
                }
                if !valid_name(name) {
                    return Err(RejectReason::InvalidName);
                }
                let incarnation = character.incarnation;
                if incarnation > 0 && self.departures.get(&pid).is_some_and(|d| d.incarnation >= incarnation) {
                    return Err(RejectReason::StaleCharacter);
                }
                let entity = self.alloc_entity();
                let pos = match &character.place {
                    Some((zone, p)) if *zone == self.config.name && self.config.is_free(*p) && !self.at_exit(*p) => *p,
                    _ => self.random_free_point(),
                };
                let level = character.level.max(1);
                let mut inventory = character.inventory.clone();
                inventory.retain(|_, count| *count > 0);
                let player = Player {
                    id: pid,
                    entity,
                    name: name.clone(),
                    pos,
                    velocity: Point::default(),
                    hp: max_hp_for(level),
                    level,
                    xp: character.xp,
                    gold: character.gold,
                    inventory,
                    attack_ready_at: 0,
                    respawn_at: None,
                    incarnation,
                };
                let arrived = player.character(&self.config.name);
                self.players.insert(pid, player);
                self.player_entities.insert(entity, pid);
                self.emit(out, EventKind::PlayerJoined { player: pid, name: name.clone(), entity, character: arrived });
            }
            CommandKind::Leave => {
                let p = self.players.get(&pid).ok_or(RejectReason::NotInZone)?;
                let character = p.character(&self.config.name);
                self.depart(pid, character, None, out);
            }
            CommandKind::Move { velocity } => {
                let max_speed = self.config.max_speed;
                let p = self.players.get_mut(&pid).ok_or(RejectReason::NotInZone)?;
                if !within(*velocity, max_speed) {
                    return Err(RejectReason::TooFast);
                }
                if !p.is_alive() {
                    return Err(RejectReason::Dead);
                }
                p.velocity = *velocity;
            }
            CommandKind::Resume => {
                if !self.players.contains_key(&pid) {
                    return Err(RejectReason::NotInZone);
                }
                self.emit(out, EventKind::SessionResumed { player: pid });
            }
            CommandKind::ZoneStarted => self.emit(out, EventKind::ZoneStarted),
            CommandKind::ZoneStopped => self.emit(out, EventKind::ZoneStopped),
            CommandKind::Attack { target } => self.attack(pid, *target, out)?,
            CommandKind::Pickup { item } => self.pickup(pid, *item, out)?,
        }
        Ok(())
    }

    fn attack(&mut self, pid: PlayerId, target: EntityId, out: &mut TickOutput) -> Result<(), RejectReason> {
        let tick = self.tick;
        let range = self.config.attack_range;
        let attacker = self.players.get(&pid).ok_or(RejectReason::NotInZone)?;
        if !attacker.is_alive() {
            return Err(RejectReason::Dead);
        }
        if attacker.attack_ready_at > tick {
            return Err(RejectReason::Cooldown);
        }
        if attacker.entity == target {
            return Err(RejectReason::InvalidTarget);
        }
        let (from, damage) = (attacker.pos, player_damage(attacker.level));
        let in_range = |p: Point| p.dist2(from) <= i64::from(range) * i64::from(range);
        if let Some(&victim_id) = self.player_entities.get(&target) {
            let victim = self.players.get(&victim_id).ok_or(RejectReason::NoSuchTarget)?;
            if !victim.is_alive() {
                return Err(RejectReason::TargetDead);
            }
            if !in_range(victim.pos) {
                return Err(RejectReason::OutOfRange);
            }
            self.set_cooldown(pid);
            if let Blow::Killed = self.hurt_player(victim_id, damage, Killer::Player(pid), out) {
                self.grant(pid, PLAYER_KILL_XP, 0, out);
            }
        } else if let Some(npc) = self.npcs.get_mut(&target) {
            if npc.respawn_at.is_some() {
                return Err(RejectReason::TargetDead);
            }
            if !in_range(npc.pos) {
                return Err(RejectReason::OutOfRange);
            }
            npc.hp -= damage;
            let killed = npc.hp <= 0;
            if killed {
                npc.hp = 0;
                npc.respawn_at = Some(tick + u64::from(self.config.respawn_ticks));
            }
            self.set_cooldown(pid);
            if killed {
                self.emit(out, EventKind::NpcKilled { npc: target, killer: pid });
                self.grant(pid, NPC_XP, NPC_GOLD, out);
            }
        } else if self.items.contains_key(&target) {
            return Err(RejectReason::InvalidTarget);
        } else {
            return Err(RejectReason::NoSuchTarget);
        }
        Ok(())
    }

    fn set_cooldown(&mut self, pid: PlayerId) {
        let ready = self.tick + u64::from(self.config.attack_cooldown_ticks);
        if let Some(p) = self.players.get_mut(&pid) {
            p.attack_ready_at = ready;
        }
    }

    fn hurt_player(&mut self, victim: PlayerId, damage: i32, killer: Killer, out: &mut TickOutput) -> Blow {
        let respawn_at = self.tick + u64::from(self.config.respawn_ticks);
        let Some(p) = self.players.get_mut(&victim) else { return Blow::Wounded };
        p.hp -= damage;
        if p.hp > 0 {
            return Blow::Wounded;
        }
        p.hp = 0;
        p.velocity = Point::default();
        p.respawn_at = Some(respawn_at);
        self.emit(out, EventKind::PlayerKilled { victim, killer });
        Blow::Killed
    }

    /// Adds XP and gold, emitting gold and level-up events; a level-up heals fully.
    fn grant(&mut self, pid: PlayerId, xp: u64, gold: u64, out: &mut TickOutput) {
        // The second build of the test suite: a rule change for `respawn replay --build` to find.
        let gold = if cfg!(feature = "planted-rule-change") && gold > 0 { gold + 1 } else { gold };
        let Some(p) = self.players.get_mut(&pid) else { return };
        p.xp = p.xp.saturating_add(xp);
        let mut levels = Vec::new();
        while p.xp >= xp_for_level(p.level + 1) {
            p.level += 1;
            p.hp = p.max_hp();
            levels.push(p.level);
        }
        let total = if gold > 0 {
            p.gold = p.gold.saturating_add(gold);
            Some(p.gold)
        } else {
            None
        };
        let xp_total = p.xp;
        if let Some(total) = total {
            self.emit(out, EventKind::GoldChanged { player: pid, delta: gold as i64, total });
        }
        if xp > 0 {
            self.emit(out, EventKind::XpGained { player: pid, amount: xp, total: xp_total });
        }
        for level in levels {
            self.emit(out, EventKind::LevelUp { player: pid, level });
        }
    }

    fn pickup(&mut self, pid: PlayerId, item_id: EntityId, out: &mut TickOutput) -> Result<(), RejectReason> {
        let range = self.config.pickup_range;
        let slots = self.config.inventory_slots as usize;
        let p = self.players.get(&pid).ok_or(RejectReason::NotInZone)?;
        if !p.is_alive() {
            return Err(RejectReason::Dead);
        }
        let item = self.items.get(&item_id).ok_or(RejectReason::NoSuchItem)?;
        if item.pos.dist2(p.pos) > i64::from(range) * i64::from(range) {
            return Err(RejectReason::OutOfRange);
        }
        if item.kind != ItemKind::Gold && !p.inventory.contains_key(&item.kind) && p.inventory.len() >= slots {
            return Err(RejectReason::InventoryFull);
        }
        let item = self.items.remove(&item_id).ok_or(RejectReason::NoSuchItem)?;
        if item.kind == ItemKind::Gold {
            self.grant(pid, 0, u64::from(item.amount), out);
        } else {
            let p = self.players.get_mut(&pid).ok_or(RejectReason::NotInZone)?;
            *p.inventory.entry(item.kind).or_insert(0) += item.amount;
            self.emit(out, EventKind::ItemAcquired { player: pid, item: item.kind, count: item.amount });
        }
        Ok(())
    }

    fn move_players(&mut self) {
        let config = &self.config;
        for p in self.players.values_mut() {
            if p.velocity != Point::default() {
                p.pos = slide(config, p.pos, p.velocity);
            }
        }
    }

    fn run_npcs(&mut self, out: &mut TickOutput) {
        // Positions do not change while NPCs act, so one grid serves them all;
        // life does (an NPC may kill), so it is checked at lookup.
        let aggro = self.config.npc_aggro_range;
        let mut grid = std::mem::take(&mut self.player_grid.0);
        grid.rebuild(
            self.config.width,
            self.config.height,
            aggro,
            self.players.values().filter(|p| p.is_alive()).map(|p| (p.pos, p.id)),
        );
        let ids: Vec<EntityId> = self.npcs.keys().copied().collect();
        for id in ids {
            let Some(npc) = self.npcs.get(&id) else { continue };
            if npc.respawn_at.is_some() {
                continue;
            }
            let (pos, ready) = (npc.pos, npc.attack_ready_at <= self.tick);
            // Nearest living player in aggro range; ties break on the lower id.
            let mut target: Option<(i64, PlayerId, Point)> = None;
            grid.for_each_within(pos, aggro, |p, &pid| {
                let candidate = (p.dist2(pos), pid, p);
                let alive = self.players.get(&pid).is_some_and(Player::is_alive);
                if alive && target.is_none_or(|t| (candidate.0, candidate.1) < (t.0, t.1)) {
                    target = Some(candidate);
                }
            });
            let attack2 = i64::from(self.config.attack_range).pow(2);
            match target {
                Some((d2, victim, _)) if d2 <= attack2 => {
                    if ready {
                        let cooldown = u64::from(self.config.attack_cooldown_ticks) * 2;
                        if let Some(npc) = self.npcs.get_mut(&id) {
                            npc.attack_ready_at = self.tick + cooldown;
                        }
                        self.hurt_player(victim, NPC_DAMAGE, Killer::Npc(id), out);
                    }
                }
                Some((_, _, goal)) => self.walk_npc(id, goal),
                None => {
                    let (at_goal, home) = (npc.pos.dist2(npc.wander_to) <= 100, npc.home);
                    if at_goal {
                        let goal = Point::new(
                            self.rng.range_i32(home.x - NPC_WANDER_RADIUS, home.x + NPC_WANDER_RADIUS),
                            self.rng.range_i32(home.y - NPC_WANDER_RADIUS, home.y + NPC_WANDER_RADIUS),
                        );
                        if let Some(npc) = self.npcs.get_mut(&id) {
                            npc.wander_to = goal;
                        }
                    }
                    let goal = self.npcs.get(&id).map_or(pos, |n| n.wander_to);
                    self.walk_npc(id, goal);
                }
            }
        }
        self.player_grid.0 = grid;
    }

    fn walk_npc(&mut self, id: EntityId, goal: Point) {
        let config = &self.config;
        if let Some(npc) = self.npcs.get_mut(&id) {
            let step = step_towards(npc.pos, goal, config.npc_speed);
            let next = slide(config, npc.pos, step);
            if next == npc.pos {
                // Blocked: give up this goal so the NPC picks another one.
                npc.wander_to = npc.pos;
            }
            npc.pos = next;
        }
    }

    fn respawn(&mut self, out: &mut TickOutput) {
        let tick = self.tick;
        let due: Vec<PlayerId> =
            self.players.values().filter(|p| p.respawn_at.is_some_and(|t| t <= tick)).map(|p| p.id).collect();
        for pid in due {
            let pos = self.random_free_point();
            if let Some(p) = self.players.get_mut(&pid) {
                p.respawn_at = None;
                p.hp = p.max_hp();
                p.pos = pos;
                self.emit(out, EventKind::PlayerRespawned { player: pid });
            }
        }
        for npc in self.npcs.values_mut() {
            if npc.respawn_at.is_some_and(|t| t <= tick) {
                npc.respawn_at = None;
                npc.hp = NPC_HP;
                npc.pos = npc.home;
                npc.wander_to = npc.home;
            }
        }
    }

    fn spawn_items(&mut self) {
        if !self.tick.is_multiple_of(u64::from(self.config.item_spawn_interval_ticks))
            || self.items.len() >= self.config.max_items as usize
        {
            return;
        }
        let kind = match self.rng.below(10) {
            0..=5 => ItemKind::Gold,
            6 | 7 => ItemKind::Potion,
            8 => ItemKind::Gem,
            _ => ItemKind::Scroll,
        };
        let amount = if kind == ItemKind::Gold { 1 + self.rng.below(20) } else { 1 };
        let pos = self.random_free_point();
        let entity = self.alloc_entity();
        self.items.insert(entity, ZoneItem { entity, kind, amount, pos });
    }
}

/// Moves `pos` by `v`, sliding along an axis when the full step is blocked.
fn slide(config: &ZoneConfig, pos: Point, v: Point) -> Point {
    let full = Point::new(pos.x.saturating_add(v.x), pos.y.saturating_add(v.y));
    for candidate in [full, Point::new(full.x, pos.y), Point::new(pos.x, full.y)] {
        if config.is_free(candidate) {
            return candidate;
        }
    }
    pos
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geom::Rect;

    fn quiet_zone() -> Zone {
        let mut config = ZoneConfig::standard(7, "test", 11);
        config.npc_count = 0;
        config.max_items = 0;
        Zone::new(config).expect("valid config")
    }

    fn cmd(player: PlayerId, seq: u32, kind: CommandKind) -> Command {
        Command { player, seq, kind }
    }

    fn join(zone: &mut Zone, player: PlayerId, name: &str) -> TickOutput {
        zone.tick(&[cmd(player, 0, CommandKind::join_fresh(name))])
    }

    fn place(zone: &mut Zone, player: PlayerId, pos: Point) {
        zone.players.get_mut(&player).expect("present").pos = pos;
    }

    #[test]
    fn join_move_leave() {
        let mut z = quiet_zone();
        let out = join(&mut z, 1, "ann");
        assert!(matches!(out.events[0].kind, EventKind::PlayerJoined { player: 1, .. }));
        assert_eq!(out.events[0].id, EventId { zone: 7, epoch: 0, tick: 1, index: 0 });
        place(&mut z, 1, Point::new(1_000, 1_000));
        z.tick(&[cmd(1, 1, CommandKind::Move { velocity: Point::new(30, 0) })]);
        z.tick(&[]);
        assert_eq!(z.player(1).expect("present").pos, Point::new(1_060, 1_000));
        let out = z.tick(&[cmd(1, 2, CommandKind::Leave)]);
        assert!(matches!(out.events[0].kind, EventKind::PlayerLeft { player: 1, .. }));
        assert!(z.player(1).is_none());
    }

    fn kept(incarnation: u64) -> Character {
        Character {
            incarnation,
            level: 3,
            xp: 320,
            gold: 41,
            inventory: BTreeMap::from([(ItemKind::Gem, 2), (ItemKind::Scroll, 0)]),
            place: Some(("test".into(), Point::new(1_234, 2_345))),
        }
    }

    #[test]
    fn a_kept_character_comes_back_as_it_left_and_leaves_with_its_progress() {
        let mut z = quiet_zone();
        let out = z.tick(&[cmd(5, 0, CommandKind::Join { name: "eve".into(), character: kept(4) })]);
        let p = z.player(5).expect("joined");
        assert_eq!((p.level, p.xp, p.gold, p.hp, p.incarnation), (3, 320, 41, max_hp_for(3), 4));
        assert_eq!(p.pos, Point::new(1_234, 2_345), "back where it stood in this zone");
        assert_eq!(p.inventory, BTreeMap::from([(ItemKind::Gem, 2)]), "empty stacks are dropped");
        let EventKind::PlayerJoined { character, .. } = &out.events[0].kind else { panic!("{:?}", out.events) };
        assert_eq!((character.gold, character.place.clone()), (41, Some(("test".into(), Point::new(1_234, 2_345)))));
        assert_eq!(out.events[0].incarnation, 4, "events carry the stay's incarnation");

        z.players.get_mut(&5).expect("present").gold += 9;
        let out = z.tick(&[cmd(5, 1, CommandKind::Leave)]);
        let EventKind::PlayerLeft { character, .. } = &out.events[0].kind else { panic!("{:?}", out.events) };
        assert_eq!((character.incarnation, character.level, character.gold), (4, 3, 50));
        assert_eq!(out.events[0].incarnation, 4);
        assert_eq!(z.departures()[&5], Departure { incarnation: 4, tick: 2 });

        let mut elsewhere = kept(5);
        elsewhere.place = Some(("caverns".into(), Point::new(1_234, 2_345)));
        z.tick(&[cmd(5, 0, CommandKind::Join { name: "eve".into(), character: elsewhere })]);
        assert_ne!(z.player(5).expect("joined").pos, Point::new(1_234, 2_345), "a place in another zone is not used");
    }

    #[test]
    fn walking_into_an_exit_leaves_for_its_zone_with_the_arrival_as_place() {
        let mut config = ZoneConfig::standard(7, "test", 11);
        (config.npc_count, config.max_items) = (0, 0);
        let exit = crate::config::Exit {
            area: Rect::new(2_000, 900, 300, 200),
            to: "caverns".into(),
            arrival: Point::new(600, 700),
        };
        config.exits = vec![exit];
        let mut z = Zone::new(config).expect("valid config");
        z.tick(&[cmd(5, 0, CommandKind::Join { name: "eve".into(), character: kept(4) })]);
        place(&mut z, 5, Point::new(1_950, 1_000));
        z.tick(&[cmd(5, 1, CommandKind::Move { velocity: Point::new(30, 0) })]);
        let out = z.tick(&[]);
        assert!(z.player(5).is_none(), "it left through the exit");
        let EventKind::PlayerLeft { character, travel, .. } = &out.events[0].kind else { panic!("{:?}", out.events) };
        assert_eq!(travel.as_deref(), Some("caverns"));
        assert_eq!(character.place, Some(("caverns".into(), Point::new(600, 700))), "the arrival in the other zone");
        assert_eq!((character.gold, character.incarnation), (41, 4), "with everything it had");
        assert_eq!(z.departures()[&5].incarnation, 4);

        // A kept place on an exit is not used: the player would leave at once.
        let mut on_exit = kept(5);
        on_exit.place = Some(("test".into(), Point::new(2_100, 1_000)));
        z.tick(&[cmd(6, 0, CommandKind::Join { name: "fay".into(), character: on_exit })]);
        z.tick(&[]);
        assert!(z.player(6).is_some_and(|p| z.config().exit_at(p.pos).is_none()));
    }

    #[test]
    fn a_stay_that_ended_cannot_be_entered_again_until_long_forgotten() {
        let mut z = quiet_zone();
        z.tick(&[cmd(5, 0, CommandKind::Join { name: "eve".into(), character: kept(4) })]);
        z.tick(&[cmd(5, 0, CommandKind::Leave)]);
        for stale in [kept(4), kept(3)] {
            let out = z.tick(&[cmd(5, 0, CommandKind::Join { name: "eve".into(), character: stale })]);
            assert_eq!(out.rejections[0].reason, RejectReason::StaleCharacter);
            assert!(z.player(5).is_none());
        }
        let out = z.tick(&[cmd(6, 0, CommandKind::join_fresh("fay"))]);
        assert!(out.rejections.is_empty(), "characters no platform keeps are not remembered");
        while z.tick_number() < 2 + DEPARTURE_MEMORY_TICKS + 200 {
            z.tick(&[]);
        }
        assert!(z.departures().is_empty(), "departures are forgotten");
        let out = z.tick(&[cmd(5, 0, CommandKind::Join { name: "eve".into(), character: kept(5) })]);
        assert!(out.rejections.is_empty());
    }

    #[test]
    fn too_fast_is_rejected_as_cheat_and_not_applied() {
        let mut z = quiet_zone();
        join(&mut z, 1, "ann");
        let before = z.player(1).expect("present").pos;
        let out = z.tick(&[cmd(1, 5, CommandKind::Move { velocity: Point::new(31, 0) })]);
        assert_eq!(out.rejections, vec![Rejection { player: 1, seq: 5, reason: RejectReason::TooFast }]);
        assert!(matches!(out.events[0].kind, EventKind::CheatRejected { player: 1, reason: RejectReason::TooFast }));
        assert_eq!(z.player(1).expect("present").pos, before);
    }

    #[test]
    fn obstacles_and_bounds_block_movement() {
        let mut z = quiet_zone();
        join(&mut z, 1, "ann");
        // Just left of the first building (x 4000..6000, y 4000..5000).
        place(&mut z, 1, Point::new(3_950, 4_500));
        z.tick(&[cmd(1, 1, CommandKind::Move { velocity: Point::new(30, 0) })]);
        assert_eq!(z.player(1).expect("present").pos.x, 3_950);
        place(&mut z, 1, Point::new(50, 50));
        z.tick(&[cmd(1, 2, CommandKind::Move { velocity: Point::new(-30, -30) })]);
        let p = z.player(1).expect("present").pos;
        assert!(p.x >= z.config.body_radius && p.y >= z.config.body_radius);
    }

    #[test]
    fn combat_validation_death_xp_and_respawn() {
        let mut z = quiet_zone();
        join(&mut z, 1, "ann");
        join(&mut z, 2, "bob");
        let bob = z.player(2).expect("present").entity;
        place(&mut z, 1, Point::new(1_000, 1_000));
        let just_out = 1_000 + z.config.attack_range + 1;
        place(&mut z, 2, Point::new(just_out, 1_000));
        let out = z.tick(&[cmd(1, 1, CommandKind::Attack { target: bob })]);
        assert_eq!(out.rejections[0].reason, RejectReason::OutOfRange);
        assert_eq!(z.player(2).expect("present").hp, PLAYER_BASE_HP);

        place(&mut z, 2, Point::new(1_100, 1_000));
        let out = z.tick(&[cmd(1, 2, CommandKind::Attack { target: bob })]);
        assert!(out.rejections.is_empty());
        assert_eq!(z.player(2).expect("present").hp, PLAYER_BASE_HP - player_damage(1));
        let out = z.tick(&[cmd(1, 3, CommandKind::Attack { target: bob })]);
        assert_eq!(out.rejections[0].reason, RejectReason::Cooldown);

        let mut killed_at = None;
        for seq in 4..200 {
            let out = z.tick(&[cmd(1, seq, CommandKind::Attack { target: bob })]);
            if out.events.iter().any(|e| matches!(e.kind, EventKind::PlayerKilled { victim: 2, .. })) {
                killed_at = Some(out.tick);
                break;
            }
        }
        let killed_at = killed_at.expect("bob dies eventually");
        assert_eq!(z.player(1).expect("present").xp, PLAYER_KILL_XP);
        for _ in 0..z.config.attack_cooldown_ticks {
            z.tick(&[]);
        }
        let out = z.tick(&[cmd(1, 300, CommandKind::Attack { target: bob })]);
        assert_eq!(out.rejections[0].reason, RejectReason::TargetDead);
        let out = z.tick(&[cmd(2, 1, CommandKind::Attack { target: z.player(1).expect("present").entity })]);
        assert_eq!(out.rejections[0].reason, RejectReason::Dead);

        let mut respawned = false;
        for _ in 0..z.config.respawn_ticks {
            let out = z.tick(&[]);
            respawned |= out.events.iter().any(|e| matches!(e.kind, EventKind::PlayerRespawned { player: 2 }));
        }
        assert!(respawned, "respawn after {} ticks from {killed_at}", z.config.respawn_ticks);
        assert_eq!(z.player(2).expect("present").hp, PLAYER_BASE_HP);
    }

    #[test]
    fn pickup_gold_and_items_with_validation() {
        let mut z = quiet_zone();
        join(&mut z, 1, "ann");
        place(&mut z, 1, Point::new(1_000, 1_000));
        z.items.insert(900, ZoneItem { entity: 900, kind: ItemKind::Gold, amount: 7, pos: Point::new(1_050, 1_000) });
        z.items.insert(901, ZoneItem { entity: 901, kind: ItemKind::Gem, amount: 1, pos: Point::new(3_000, 1_000) });
        let out = z.tick(&[
            cmd(1, 1, CommandKind::Pickup { item: 900 }),
            cmd(1, 2, CommandKind::Pickup { item: 900 }),
            cmd(1, 3, CommandKind::Pickup { item: 901 }),
        ]);
        assert_eq!(z.player(1).expect("present").gold, 7);
        assert!(matches!(out.events[0].kind, EventKind::GoldChanged { player: 1, delta: 7, total: 7 }));
        let reasons: Vec<_> = out.rejections.iter().map(|r| (r.seq, r.reason)).collect();
        assert_eq!(reasons, vec![(2, RejectReason::NoSuchItem), (3, RejectReason::OutOfRange)]);
        place(&mut z, 1, Point::new(3_000, 1_000));
        let out = z.tick(&[cmd(1, 4, CommandKind::Pickup { item: 901 })]);
        assert!(matches!(out.events[0].kind, EventKind::ItemAcquired { player: 1, item: ItemKind::Gem, count: 1 }));
        assert_eq!(z.player(1).expect("present").inventory.get(&ItemKind::Gem), Some(&1));
    }

    #[test]
    fn resumes_and_the_zone_lifecycle_are_recorded() {
        let mut z = quiet_zone();
        join(&mut z, 1, "ann");
        let out = z.tick(&[
            cmd(0, 0, CommandKind::ZoneStarted),
            cmd(1, 0, CommandKind::Resume),
            cmd(2, 0, CommandKind::Resume),
            cmd(0, 0, CommandKind::ZoneStopped),
        ]);
        let kinds: Vec<&EventKind> = out.events.iter().map(|e| &e.kind).collect();
        assert_eq!(kinds, [&EventKind::ZoneStarted, &EventKind::SessionResumed { player: 1 }, &EventKind::ZoneStopped]);
        assert_eq!(out.rejections.len(), 1, "no character to resume for player 2");
        assert_eq!(out.rejections[0].reason, RejectReason::NotInZone);
    }

    #[test]
    fn levels_follow_xp() {
        assert_eq!(xp_for_level(1), 0);
        assert_eq!(xp_for_level(2), 100);
        assert_eq!(xp_for_level(3), 300);
        let mut z = quiet_zone();
        join(&mut z, 1, "ann");
        let mut out = TickOutput::default();
        z.grant(1, 310, 0, &mut out);
        assert_eq!(z.player(1).expect("present").level, 3);
        let kinds: Vec<&EventKind> = out.events.iter().map(|e| &e.kind).collect();
        assert_eq!(
            kinds,
            [
                &EventKind::XpGained { player: 1, amount: 310, total: 310 },
                &EventKind::LevelUp { player: 1, level: 2 },
                &EventKind::LevelUp { player: 1, level: 3 },
            ]
        );
    }

    #[test]
    fn bad_commands_are_rejected() {
        let mut z = quiet_zone();
        let out = z.tick(&[cmd(9, 1, CommandKind::Move { velocity: Point::new(1, 1) })]);
        assert_eq!(out.rejections[0].reason, RejectReason::NotInZone);
        let out = z.tick(&[cmd(9, 0, CommandKind::join_fresh("bad name!"))]);
        assert_eq!(out.rejections[0].reason, RejectReason::InvalidName);
        join(&mut z, 1, "ann");
        let out = join(&mut z, 1, "ann");
        assert_eq!(out.rejections[0].reason, RejectReason::AlreadyJoined);
        let me = z.player(1).expect("present").entity;
        let out =
            z.tick(&[cmd(1, 2, CommandKind::Attack { target: me }), cmd(1, 3, CommandKind::Attack { target: 77_777 })]);
        assert_eq!(out.rejections[0].reason, RejectReason::InvalidTarget);
        assert_eq!(out.rejections[1].reason, RejectReason::NoSuchTarget);
    }

    #[test]
    fn npcs_wander_hunt_and_items_spawn() {
        let mut z = Zone::new(ZoneConfig::standard(1, "live", 3)).expect("zone");
        join(&mut z, 1, "ann");
        let npc_start: Vec<Point> = z.npcs.values().map(|n| n.pos).collect();
        for _ in 0..200 {
            z.tick(&[]);
        }
        let moved = z.npcs.values().zip(&npc_start).filter(|(n, p)| n.pos != **p).count();
        assert!(moved > 0, "NPCs wander");
        assert!(!z.items.is_empty(), "items spawn on schedule");
        // An NPC next to a player attacks it.
        let npc = *z.npcs.keys().next().expect("npcs exist");
        let at = z.npcs[&npc].pos;
        place(&mut z, 1, Point::new(at.x + 10, at.y));
        z.players.get_mut(&1).expect("present").velocity = Point::default();
        let hp = z.player(1).expect("present").hp;
        for _ in 0..3 {
            z.tick(&[]);
        }
        assert!(z.player(1).expect("present").hp < hp);
    }
}
