import type { Application } from "./application.ts";

/** The default application: logs what it receives. Replace this folder with your own. */
export const application: Application = {
  onEvent(event, { log }) {
    log.info("event received", {
      eventId: event.event_id,
      roomId: event.room_id,
      type: event.type,
      sender: event.sender,
    });
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
