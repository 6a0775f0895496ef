// @respawn/client: a TypeScript client for Respawn (docs/clients.md).
export * from "./protocol.js";
export * from "./platform.js";
export * from "./session.js";
export * from "./world.js";
export * from "./gen/respawn_pb.js";
