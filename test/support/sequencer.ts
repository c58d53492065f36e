import { relative } from "node:path";
import { BaseSequencer, type TestSpecification } from "vitest/node";

/**
 * Vitest's order, but across a group's projects rather than one project's files after the
 * other's: in each group (`sequence.groupOrder`), files the last run did not see first, the
 * largest first; then the longest the last run took first. The integration group's two projects
 * then share its two workers from the start, and its longest file (an npm-start one) does not
 * start last and run on alone.
 */
export default class LongestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]) {
    const { cache, config } = this.ctx;
    const weight = (spec: TestSpecification) => {
      const key = `${spec.project.name}:${relative(config.root, spec.moduleId)}`;
      const duration = cache.getFileTestResults(key)?.duration;
      return duration === undefined
        ? { seen: 0, size: cache.getFileStats(key)?.size ?? 0 }
        : { seen: 1, size: duration };
    };
    const weights = new Map(files.map((spec) => [spec, weight(spec)]));
    return [...files].sort((a, b) => {
      const groupOrder =
        a.project.config.sequence.groupOrder - b.project.config.sequence.groupOrder;
      if (groupOrder !== 0) return groupOrder;
      const [wa, wb] = [weights.get(a), weights.get(b)] as [
        ReturnType<typeof weight>,
        ReturnType<typeof weight>,
      ];
      return wa.seen - wb.seen || wb.size - wa.size;
    });
  }
}
