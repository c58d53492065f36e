import type { Application } from "../../appservice/api.ts";

/** An echo bot: joins when invited, and repeats every text message back into its room. */
export const application: Application = {
  async onEvent(event, { actions }) {
    if (event.type === "m.room.member" && event.state_key === actions.botUserId) {
      if (event.content.membership === "invite") await actions.join(event.room_id);
      return;
    }
    if (event.type !== "m.room.message" || event.sender === actions.botUserId) return;
    if (event.content.msgtype === "m.text") {
      await actions.sendMessage(event.room_id, `echo: ${String(event.content.body)}`);
    }
  },
  // An HTTP route of its own: GET /echo/{text} → {"echo": text}.
  routes: [
    {
      method: "GET",
      path: "/echo/{text}",
      handle: (request) => ({ status: 200, body: { echo: request.pathParameters.text } }),
    },
  ],
};
