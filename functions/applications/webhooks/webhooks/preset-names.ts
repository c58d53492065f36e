/** The presets' names (their code is in presets.ts, keyed by these). */
export const PRESET_NAMES = ["alertmanager", "github", "gitlab"] as const;
export type PresetName = (typeof PRESET_NAMES)[number];

export const isPresetName = (name: string): name is PresetName =>
  (PRESET_NAMES as readonly string[]).includes(name);
