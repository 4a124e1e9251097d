// Prints vitest's JSON result as the one line CI reads: "N passed, N failed".
// A run with no test at all, or a missing report, counts as a failure.
import { readFileSync } from 'node:fs';

let report;
try {
  report = JSON.parse(readFileSync(process.argv[2], 'utf8'));
} catch (err) {
  console.log(`no test report (${err.message})`);
  console.log('0 passed, 1 failed');
  process.exit(1);
}
const passed = report.numPassedTests ?? 0;
// Skipped or todo tests are failures here: a suite that cannot run must say so loudly.
const failed = (report.numFailedTests ?? 0) + (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0);
const suiteErrors = (report.testResults ?? []).filter((r) => r.status === 'failed' && (r.assertionResults ?? []).length === 0).length;
console.log(`${passed} passed, ${failed + suiteErrors} failed`);
process.exit(passed > 0 && failed + suiteErrors === 0 ? 0 : 1);
