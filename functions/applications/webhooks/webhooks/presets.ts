import type { PresetName } from "./preset-names.ts";

/**
 * Ready-made transformations (`!webhook new <name> --preset <preset>`): JavaScript run in the
 * same sandbox as a moderator's, each turning one service's payloads into Markdown. A webhook
 * keeps the preset's name, not its code, so an improved preset applies at once. Only the app
 * function, which runs them, bundles their code.
 */
export const PRESETS: Record<PresetName, string> = {
  // Prometheus Alertmanager's webhook_config payload (version 4).
  alertmanager: `
if (!data || !Array.isArray(data.alerts)) return null;
const firing = data.alerts.filter((a) => a.status === "firing");
const resolved = data.alerts.filter((a) => a.status !== "firing");
const line = (a) => {
  const labels = a.labels || {};
  const notes = a.annotations || {};
  const name = labels.alertname || "alert";
  const where = labels.instance ? " on " + labels.instance : "";
  const severity = labels.severity ? " [" + labels.severity + "]" : "";
  const about = notes.summary || notes.description || "";
  const link = a.generatorURL ? " ([source](" + a.generatorURL + "))" : "";
  return "- **" + name + "**" + severity + where + (about ? ": " + about : "") + link;
};
const parts = [];
if (firing.length) parts.push("🔥 **" + firing.length + " firing**", ...firing.map(line));
if (resolved.length) parts.push("✅ **" + resolved.length + " resolved**", ...resolved.map(line));
if (!parts.length) return null;
return { text: parts.join("\\n"), msgtype: firing.length ? "m.text" : "m.notice" };
`,
  // GitHub's push and pull_request events (Gitea and Forgejo send the same shapes).
  github: `
if (!data || !data.repository) return null;
const repo = data.repository.full_name || data.repository.name || "repository";
const who = (data.sender && data.sender.login) || (data.pusher && (data.pusher.name || data.pusher.login)) || "someone";
if (Array.isArray(data.commits) && typeof data.ref === "string") {
  if (data.commits.length === 0) return null;
  const branch = data.ref.replace(/^refs\\/(heads|tags)\\//, "");
  const shown = data.commits.slice(0, 5).map((c) =>
    "- [" + String(c.id).slice(0, 7) + "](" + c.url + ") " + String(c.message).split("\\n")[0] +
    (c.author && c.author.name ? " — " + c.author.name : ""));
  const more = data.commits.length > 5 ? ["- … and " + (data.commits.length - 5) + " more"] : [];
  const compare = data.compare ? " ([compare](" + data.compare + "))" : "";
  const count = data.commits.length + " commit" + (data.commits.length === 1 ? "" : "s");
  return { text: ["**" + who + "** pushed " + count + " to **" + repo + "** " + branch + compare, ...shown, ...more].join("\\n") };
}
if (data.pull_request && typeof data.action === "string") {
  const pr = data.pull_request;
  const action = data.action === "closed" && pr.merged ? "merged" : data.action;
  if (!["opened", "closed", "merged", "reopened", "ready_for_review"].includes(action)) return null;
  return { text: "**" + who + "** " + action.replace(/_/g, " ") + " pull request [#" + (data.number || pr.number) + " " + pr.title + "](" + pr.html_url + ") in **" + repo + "**" };
}
return null;
`,
  // GitLab's push and merge request events.
  gitlab: `
if (!data || !data.project) return null;
const repo = data.project.path_with_namespace || data.project.name || "project";
if (data.object_kind === "push") {
  const commits = Array.isArray(data.commits) ? data.commits : [];
  if (commits.length === 0) return null;
  const branch = String(data.ref || "").replace(/^refs\\/heads\\//, "");
  const shown = commits.slice(0, 5).map((c) =>
    "- [" + String(c.id).slice(0, 8) + "](" + c.url + ") " + String(c.title || c.message).split("\\n")[0]);
  const total = data.total_commits_count || commits.length;
  return { text: ["**" + (data.user_name || "someone") + "** pushed " + total + " commit" + (total === 1 ? "" : "s") + " to **" + repo + "** " + branch, ...shown].join("\\n") };
}
if (data.object_kind === "merge_request" && data.object_attributes) {
  const mr = data.object_attributes;
  const done = { open: "opened", close: "closed", reopen: "reopened", merge: "merged" }[mr.action];
  if (!done) return null;
  const who = (data.user && (data.user.username || data.user.name)) || "someone";
  return { text: "**" + who + "** " + done + " merge request [!" + mr.iid + " " + mr.title + "](" + mr.url + ") in **" + repo + "**" };
}
return null;
`,
};
