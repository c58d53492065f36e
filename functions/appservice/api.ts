/**
 * The application API: everything an application (`functions/applications/webhooks/`, `functions/applications/echo-bot/`) may
 * import from this project. The callbacks and routes it implements, the context they act with
 * (queued actions, immediate calls, its own data with portals and puppets, derived secrets), the
 * events it is given, the errors it may throw and those the immediate calls throw. test/unit/layers.test.ts holds applications to this module alone.
 */
export type {
  Actions,
  As,
  CreateRoomOptions,
  MessageOptions,
  Profile,
  Reason,
  Timestamped,
} from "../matrix/actions.ts";
// Deliveries to remote services (`actions.deliver`).
export { type DeliveryOptions, MAX_DELIVERY_BYTES } from "../matrix/actions.ts";
export { BudgetExhausted } from "../matrix/bounded-call.ts";
export type { BridgedThing, BridgeInfo } from "../matrix/bridge-info.ts";
export {
  decryptAttachment,
  encryptAttachment,
  encryptedFileOf,
  type RoomMedia,
  roomIsEncrypted,
  uploadRoomMedia,
} from "../matrix/encrypted-attachment.ts";
export type {
  DirectRoomOptions,
  HomeserverCalls,
  MemberProfile,
  PuppetOptions,
  RoomEvent,
  RoomOptions,
} from "../matrix/homeserver-calls.ts";
export type { DownloadedMedia, MediaContent, UploadOptions } from "../matrix/media.ts";
export { MediaTooLarge } from "../matrix/media.ts";
export type { InReplyTo, MessageContent } from "../matrix/relations.ts";
export { HomeserverRefused } from "../matrix/request.ts";
export type { Presence } from "../matrix/requests.ts";
export type { HomeserverReader, StateEvent } from "../matrix/room-state.ts";
export type { RemoteRequest } from "../remote/remote-http.ts";
export {
  badJson,
  forbidden,
  MatrixError,
  parseJson,
  tooLarge,
  unauthorized,
} from "../shared/errors.ts";
export { sha256 } from "../shared/hash.ts";
export { type ImageSize, imageInfo } from "../shared/image-size.ts";
export type { Log } from "../shared/log.ts";
export {
  type AppDataStore,
  type AppDataWrite,
  type AppValue,
  listValues,
} from "../store/app-data.ts";
export type { DeliveryOutcome } from "../store/delivery-outcomes.ts";
export type { Link, LinkMap } from "../store/links.ts";
// Rate limits shared by every instance: token buckets in the application's data.
export { type BucketPolicy, lastBucketToken, takeBucketToken } from "../store/token-bucket.ts";
export type {
  AliasRoom,
  Application,
  ApplicationContext,
  ApplicationEvents,
  ApplicationOperator,
  ApplicationQueries,
  ApplicationRoutes,
  AppRequest,
  AppResponse,
  AppRoute,
  ConsoleColumn,
  ConsoleContext,
  ConsoleRow,
  ConsoleSection,
  DeliveredEvent,
  EventDecryption,
  MessageMap,
  QueryContext,
  RecentCall,
  ServiceContext,
  ThirdParty,
  ThirdPartyLocation,
  ThirdPartyProtocol,
  ThirdPartyUser,
  UserProfile,
} from "./application.ts";
export { type Attachment, base64Attachment, MIME_TYPE } from "./attachment.ts";
export {
  type ApplicationConfig,
  type ApplicationManifest,
  type ApplicationSetting,
  type BundleFiles,
  defineApplication,
  type PartLoader,
} from "./manifest.ts";
export {
  type ClientEvent,
  type DeviceData,
  type EphemeralEvent,
  isInviteOf,
  type ToDeviceMessage,
} from "./protocol/transaction.ts";
// What senders from outside write, made safe as message text and as names (webhooks, the relay).
export { cleanName, cleanText } from "./text.ts";
