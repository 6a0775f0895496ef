import { test } from "node:test";
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";

import { EntityStateSchema, Interpolator, StateUpdateSchema, WelcomeSchema, World } from "../src/index.js";

const entity = (id: number, x: number, y: number) => create(EntityStateSchema, { id, x, y, name: `e${id}`, level: 2 });

test("updates enter, change, move (by id gaps and steps) and remove entities", () => {
  const world = new World();
  world.reset(create(WelcomeSchema, { entityId: 7, tick: 1n }));
  world.apply(create(StateUpdateSchema, { tick: 2n, entered: [entity(3, 0, 0), entity(7, 100, 100)] }));
  world.apply(create(StateUpdateSchema, { tick: 3n, movedIds: [3, 4], movedSteps: [5, -5, 10, 0] }));
  assert.deepEqual([world.entities.get(3)!.x, world.entities.get(3)!.y], [5, -5]);
  assert.equal(world.entities.get(world.you)!.x, 110);
  // A change carries position and HP; a level of 0 is "as before", and the name is kept.
  world.apply(create(StateUpdateSchema, { tick: 4n, changed: [create(EntityStateSchema, { id: 7, x: 1, y: 2, hp: 9 })] }));
  assert.deepEqual([world.entities.get(7)!.x, world.entities.get(7)!.hp, world.entities.get(7)!.level, world.entities.get(7)!.name], [1, 9, 2, "e7"]);
  world.apply(create(StateUpdateSchema, { tick: 4n, left: [3] }));
  assert.deepEqual([...world.entities.keys()], [7]);
  assert.throws(() => world.apply(create(StateUpdateSchema, { movedIds: [9], movedSteps: [1, 1] })), /never entered/);
  assert.throws(() => world.apply(create(StateUpdateSchema, { movedIds: [7], movedSteps: [1] })), /1 numbers for 1 ids/);
});

test("positions are interpolated between the snapshots either side of now minus the delay", () => {
  const world = new World();
  const lerp = new Interpolator(100);
  world.apply(create(StateUpdateSchema, { entered: [entity(1, 0, 0)] }));
  lerp.record(world, 1_000);
  world.apply(create(StateUpdateSchema, { changed: [entity(1, 100, 50)], entered: [entity(2, 9, 9)] }));
  lerp.record(world, 1_050);
  // 1,125 - 100 = 1,025: halfway between the two snapshots.
  assert.deepEqual(lerp.positions(1_125).get(1), { x: 50, y: 25 });
  assert.deepEqual(lerp.positions(1_125).get(2), { x: 9, y: 9 }, "new in the later one: where it is");
  assert.deepEqual(lerp.positions(1_050).get(1), { x: 0, y: 0 }, "before the first: the first");
  assert.deepEqual(lerp.positions(5_000).get(1), { x: 100, y: 50 }, "after the last: the last");
});
