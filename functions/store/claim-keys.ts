/**
 * The keys a `ClaimStore` claims, in the table's key scheme: the DynamoDB adapter stores each as
 * the partition key as it is. A key is also the origin that seeds the IDs of the actions its
 * handler asks for, so these strings must never change.
 */
/** How the claim keys of events and other inbound items begin (IAM limits the events function to them). */
export const CLAIM_KEY_PREFIXES = { event: "EVENT#", item: "ITEM#" } as const;

export const claimKeys = {
  event: (eventId: string) => `${CLAIM_KEY_PREFIXES.event}${eventId}`,
  /** An ephemeral event, a to-device message or device data: keyed by the ID the pipeline derives. */
  item: (itemId: string) => `${CLAIM_KEY_PREFIXES.item}${itemId}`,
  userQuery: (userId: string) => `QUERY#USER#${userId}`,
  aliasQuery: (alias: string) => `QUERY#ALIAS#${alias}`,
};
