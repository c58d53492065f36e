import { defineApplication } from "../../appservice/api.ts";

/** "echo-bot", the README's example: a small application, whole in every function. */
export const manifest = defineApplication({});

const whole = async () => (await import("./index.ts")).application;
export const events = whole;
export const queries = whole;
export const routes = whole;
export const operator = whole;
