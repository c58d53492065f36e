import type { Application } from "./application.ts";

/**
 * The default application: the bot joins the rooms it is invited to, answers `!ping` with a
 * `pong` notice, and logs what it receives. Replace this folder with your own application.
 */
export const application: Application = {
  async onEvent(event, { log, actions }) {
    log.info("event received", {
      eventId: event.event_id,
      roomId: event.room_id,
      type: event.type,
      sender: event.sender,
    });
    if (
      event.type === "m.room.member" &&
      event.state_key === actions.botUserId &&
      event.content.membership === "invite"
    ) {
      await actions.join(event.room_id);
    } else if (
      event.type === "m.room.message" &&
      event.sender !== actions.botUserId &&
      event.content.body === "!ping"
    ) {
      await actions.sendNotice(event.room_id, "pong");
    }
  },
  onEphemeral(event, { log }) {
    log.info("ephemeral event received", { type: event.type, roomId: event.room_id });
  },
  onToDevice(message, { log }) {
    log.info("to-device message received", { type: message.type, toUser: message.to_user_id });
  },
  onDeviceData(data, { log }) {
    log.info("device data received", { changed: data.deviceLists?.changed?.length ?? 0 });
  },
};
