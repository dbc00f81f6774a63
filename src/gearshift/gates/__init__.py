"""Gates: evaluators of an answer that a cascade uses to accept it or escalate.

Build one from its YAML form with `build_gate({kind: length, min: 20}, models)`. Programmatic gates
(`length`, `json_schema`, `regex`, `contains`, `refusal`, `tool_calls`, `arithmetic`, `final_answer`)
run synchronously with `check()`, and so does `logprob` (on the answer's token logprobs); the `judge` and
`self_consistency` call a model and run with `await acheck()`.
"""

from gearshift.gates.arithmetic import ArithmeticGate, FinalAnswerGate, final_number
from gearshift.gates.base import GATES, Gate, GateOptions, build_gate, register
from gearshift.gates.checks import (
    ContainsGate,
    JsonSchemaGate,
    LengthGate,
    RefusalGate,
    RegexGate,
    ToolCallsGate,
    is_refusal,
    parse_json,
    strip_fences,
)
from gearshift.gates.equations import evaluate, find_equations
from gearshift.gates.judge import JudgeCall, JudgeGate, check_judge_capability, parse_pass_fail, parse_score
from gearshift.trace import Verdict

__all__ = [
    "GATES", "ArithmeticGate", "ContainsGate", "FinalAnswerGate", "Gate", "GateOptions", "JsonSchemaGate",
    "JudgeCall", "JudgeGate", "LengthGate", "RefusalGate", "RegexGate", "ToolCallsGate", "Verdict",
    "build_gate", "check_judge_capability", "evaluate", "final_number", "find_equations", "is_refusal",
    "parse_json", "parse_pass_fail", "parse_score", "register", "strip_fences",
]
