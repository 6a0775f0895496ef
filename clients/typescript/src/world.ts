// What a player sees of its zone, kept up to date from the state updates,
// and smooth positions between them.
import { create } from "@bufbuild/protobuf";
import { EntityStateSchema, type EntityState, type PlayerStats, type StateUpdate, type Welcome } from "./gen/respawn_pb.js";

/** The zone as the updates describe it: every visible entity by id. */
export class World {
  readonly entities = new Map<number, EntityState>();
  tick = 0n;
  /** The player's own entity id (from the Welcome). */
  you = 0;
  /** The player's own figures (HP, level, XP, gold, inventory), as last sent. */
  stats: PlayerStats | undefined;

  /** A new join: nothing is known yet but who we are. */
  reset(welcome: Welcome): void {
    this.entities.clear();
    this.tick = welcome.tick;
    this.you = welcome.entityId;
    this.stats = undefined;
  }

  /** Applies one update; throws when it moves an entity that never entered (a lost update). */
  apply(update: StateUpdate): void {
    this.tick = update.tick;
    for (const e of update.entered) this.entities.set(e.id, create(EntityStateSchema, e));
    // A changed entity carries its position and HP, and its max HP and level only when they changed (0: as before).
    for (const c of update.changed) {
      const e = this.entities.get(c.id);
      if (!e) continue;
      Object.assign(e, { x: c.x, y: c.y, hp: c.hp });
      if (c.maxHp) e.maxHp = c.maxHp;
      if (c.level) e.level = c.level;
    }
    for (const id of update.left) this.entities.delete(id);
    if (update.you) this.stats = update.you;
    // Protocol 2: ids as gaps from the one before, then a (dx, dy) step each.
    if (update.movedSteps.length !== update.movedIds.length * 2) {
      throw new Error(`moved_steps holds ${update.movedSteps.length} numbers for ${update.movedIds.length} ids`);
    }
    let id = 0;
    update.movedIds.forEach((gap, i) => {
      id += gap;
      const entity = this.entities.get(id);
      if (!entity) throw new Error(`entity ${id} moved but never entered`);
      entity.x += update.movedSteps[2 * i];
      entity.y += update.movedSteps[2 * i + 1];
    });
  }
}

export interface Position {
  x: number;
  y: number;
}

/**
 * Snapshot interpolation: positions drawn `delayMs` in the past, between
 * the two snapshots either side of that moment, so movement looks smooth
 * at any frame rate although updates come once a tick. Entities in only
 * the later snapshot appear where they are; those in only the earlier stay.
 */
export class Interpolator {
  private snapshots: { at: number; positions: Map<number, Position> }[] = [];

  /** `delayMs`: two ticks at 20 Hz by default, so one late update does not show. */
  constructor(readonly delayMs = 100) {}

  /** Records the world's positions as they are at `at` (milliseconds, any clock). */
  record(world: World, at: number): void {
    const positions = new Map<number, Position>();
    for (const [id, e] of world.entities) positions.set(id, { x: e.x, y: e.y });
    this.snapshots.push({ at, positions });
    // Enough history to cover the delay, and one before it.
    while (this.snapshots.length > 2 && this.snapshots[1].at <= at - this.delayMs) this.snapshots.shift();
  }

  /** Every known entity's position at `now - delayMs`. */
  positions(now: number): Map<number, Position> {
    const t = now - this.delayMs;
    const after = this.snapshots.findIndex((s) => s.at >= t);
    if (after === -1) return new Map(this.snapshots.at(-1)?.positions ?? []);
    if (after === 0) return new Map(this.snapshots[0].positions);
    const [a, b] = [this.snapshots[after - 1], this.snapshots[after]];
    const f = (t - a.at) / (b.at - a.at);
    const out = new Map<number, Position>();
    for (const [id, to] of b.positions) {
      const from = a.positions.get(id) ?? to;
      out.set(id, { x: from.x + (to.x - from.x) * f, y: from.y + (to.y - from.y) * f });
    }
    return out;
  }
}
