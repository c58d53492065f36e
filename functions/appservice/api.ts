/**
 * The application API: everything an application (`functions/app/`, `functions/echo-bot/`) may
 * import from this project. The callbacks and routes it implements, the context they act with
 * (actions, room state reads, its own data, derived secrets), the events it is given and the
 * errors it may throw. test/unit/layers.test.ts holds applications to this module alone.
 */
export type {
  Actions,
  As,
  CreateRoomOptions,
  Profile,
  Reason,
  Timestamped,
} from "../matrix/actions.ts";
// Deliveries to remote services (`actions.deliver`).
export { type DeliveryOptions, MAX_DELIVERY_BYTES } from "../matrix/actions.ts";
export type { HomeserverReader, StateEvent } from "../matrix/room-state.ts";
export {
  badJson,
  forbidden,
  MatrixError,
  notJson,
  tooLarge,
  unauthorized,
} from "../shared/errors.ts";
export { sha256 } from "../shared/hash.ts";
export type { Log } from "../shared/log.ts";
export type { RemoteRequest } from "../shared/remote-http.ts";
export type { AppDataStore, AppDataWrite, AppValue } from "../store/app-data.ts";
export type {
  AliasRoom,
  Application,
  ApplicationContext,
  AppRequest,
  AppResponse,
  AppRoute,
  QueryContext,
  ServiceContext,
  ThirdParty,
  ThirdPartyLocation,
  ThirdPartyProtocol,
  ThirdPartyUser,
  UserProfile,
} from "./application.ts";
export type {
  ClientEvent,
  DeviceData,
  EphemeralEvent,
  ToDeviceMessage,
} from "./protocol/transaction.ts";
