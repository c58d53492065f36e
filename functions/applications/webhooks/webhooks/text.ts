/** Webhook names become user localparts (`@_webhook_<tag>_<name>`): the characters those allow. */
export const WEBHOOK_NAME = /^[a-z0-9._=-]{1,32}$/;
