// The wire format: one binary WebSocket frame is one protobuf message, the
// types generated from crates/respawn-proto/proto (src/gen, `npm run generate`).
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  ClientMessageSchema,
  ServerMessageSchema,
  type ClientMessage,
  type ServerMessage,
} from "./gen/respawn_pb.js";

/** The protocol version this client speaks (`Join.protocol_version`). */
export const PROTOCOL_VERSION = 2;

/** WebSocket close codes a zone server uses (docs/protocol.md). */
export enum CloseCode {
  Normal = 1000,
  GoingAway = 1001,
  UnsupportedProtocolVersion = 4001,
  JoinTimeout = 4002,
  InvalidToken = 4003,
  UnknownZone = 4004,
  Draining = 4005,
  Kicked = 4006,
  TooSlow = 4007,
  Replaced = 4008,
  ZoneFull = 4009,
  UnknownMessage = 4010,
  JoinRequired = 4011,
  Banned = 4012,
  Migrated = 4013,
  CharacterUnavailable = 4014,
  Travelled = 4015,
}

export type ClientBody = ClientMessage["body"];
export type ServerBody = ServerMessage["body"];

export function encodeClient(body: ClientBody): Uint8Array {
  return toBinary(ClientMessageSchema, create(ClientMessageSchema, { body }));
}

/** Throws on bytes that are not a server message. */
export function decodeServer(bytes: Uint8Array): ServerBody {
  return fromBinary(ServerMessageSchema, bytes).body;
}
