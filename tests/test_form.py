"""The web form at `/` (engine/service/form.py), through FastAPI's TestClient: fields from the data
dictionary, tri-state booleans, answers kept in the page, errors beside their field in the CLI's
words, no identifier echoed, the settled state, the report and JSON, site assumptions, headers."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from html.parser import HTMLParser
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from engine import Screener
from engine.cli import app as cli_app
from engine.dictionary import FIELDS_BY_NAME, FieldType
from engine.models import DISCLAIMER, Case
from engine.service.app import ServiceConfig, create_app
from engine.service.form import CASE_ID, START_FIELDS, asked_fields
from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(120)

SITE = ROOT / "cases" / "sites" / "teaching-hospital.yaml"
SCREENER = Screener.load(site=SITE)
BARE = Screener.from_ruleset(SCREENER.ruleset)  # the same rules, no site profile
DISC = {
    "age_years": "45",
    "sex": "male",
    "diagnosis": "disc_herniation",
    "lowest_level": "L4-L5",
    "levels": "1",
    "planned_procedure": "discectomy",
}
# what a clinician answers for that patient, question after question
DISC_ANSWERS = {
    "cauda_equina_syndrome": "false",
    "progressive_neuro_deficit": "false",
    "bmi": "27",
    "prior_surgery_same_level": "false",
}


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(ServiceConfig(screener=SCREENER)))


@pytest.fixture(scope="module")
def bare_client() -> TestClient:
    return TestClient(create_app(ServiceConfig(screener=BARE)))


# --- reading the page ----------------------------------------------------------------------------


class Page(HTMLParser):
    """The form controls of a page, where each sits, and its labels."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.html = html
        self.controls: list[dict[str, Any]] = []  # input/select with its section and options
        self.label_for: set[str] = set()
        self.sections: list[str] = []
        self._stack: list[tuple[str, dict[str, str]]] = []
        self._select: dict[str, Any] | None = None
        self._in_label = 0
        self._legend_in_fieldset: list[bool] = []
        self.radios_outside_fieldset: list[str] = []
        self.fieldsets_without_legend = 0
        self.feed(html)

    def _section(self) -> str:
        for tag, attrs in reversed(self._stack):
            if tag == "section" and attrs.get("id"):
                return attrs["id"]
        return ""

    def _inside(self, tag: str) -> bool:
        return any(t == tag for t, _ in self._stack)

    def handle_starttag(self, tag: str, attrs_list: list[tuple[str, str | None]]) -> None:
        attrs = {k: v or "" for k, v in attrs_list}
        if tag == "label":
            self._in_label += 1
            if attrs.get("for"):
                self.label_for.add(attrs["for"])
        if tag == "fieldset":
            self._legend_in_fieldset.append(False)
        if tag == "legend" and self._legend_in_fieldset:
            self._legend_in_fieldset[-1] = True
        if tag == "input" and attrs.get("type") != "hidden":
            control = {
                "tag": "input",
                "section": self._section(),
                "in_details": self._inside("details"),
                "wrapped": self._in_label > 0,
                **attrs,
            }
            self.controls.append(control)
            if attrs.get("type") == "radio" and not self._inside("fieldset"):
                self.radios_outside_fieldset.append(attrs.get("name", ""))
        elif tag == "select":
            self._select = {
                "tag": "select",
                "section": self._section(),
                "in_details": self._inside("details"),
                "wrapped": self._in_label > 0,
                "options": [],
                "selected": None,
                **attrs,
            }
            self.controls.append(self._select)
        elif tag == "option" and self._select is not None:
            self._select["options"].append(attrs.get("value", ""))
            if "selected" in attrs:
                self._select["selected"] = attrs.get("value", "")
        if tag not in ("input", "meta", "link", "br"):
            self._stack.append((tag, attrs))

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self._in_label -= 1
        if tag == "select":
            self._select = None
        if tag == "fieldset" and self._legend_in_fieldset and not self._legend_in_fieldset.pop():
            self.fieldsets_without_legend += 1
        while self._stack:
            top, _ = self._stack.pop()
            if top == tag:
                break

    # -- queries --

    def named(self, name: str) -> list[dict[str, Any]]:
        return [c for c in self.controls if c.get("name") == name]

    def fields_in(self, section: str) -> list[str]:
        names: list[str] = []
        for control in self.controls:
            if control["section"] == section and control.get("name") not in names:
                names.append(control["name"])
        return names

    def value_of(self, name: str) -> str | None:
        """What the page would post for a field ('' not known), None when it is not there."""
        controls = self.named(name)
        if not controls:
            return None
        first = controls[0]
        if first["tag"] == "select":
            return str(first["selected"] if first["selected"] is not None else first["options"][0])
        if first.get("type") == "radio":
            checked = [c["value"] for c in controls if "checked" in c]
            assert len(checked) == 1, f"{name}: {len(checked)} radios checked"
            return str(checked[0])
        return str(first.get("value", ""))

    def field_block(self, name: str) -> str:
        """The HTML of one field's block (label, hint, error and control)."""
        match = re.search(
            rf'<div class="field[^"]*" id="f-{name}-field".*?\n</div>', self.html, re.DOTALL
        )
        assert match, f"no field block for {name}"
        return match.group(0)


def post(client: TestClient, data: Mapping[str, str], path: str = "/") -> Any:
    return client.post(path, data=dict(data))


def screen_of(data: Mapping[str, str], screener: Screener = SCREENER) -> Any:
    """The engine's own result for the same answers, to compare the page with (never a
    hard-coded expectation)."""
    case: dict[str, Any] = {"case_id": CASE_ID}
    for name, text in data.items():
        if text == "":
            continue
        spec = FIELDS_BY_NAME[name]
        if spec.type is FieldType.integer:
            case[name] = int(text)
        elif spec.type is FieldType.number:
            case[name] = float(text)
        elif spec.type is FieldType.boolean:
            case[name] = text == "true"
        else:
            case[name] = text
    return screener.screen(case)


def cli_message(field: str, text: str) -> str:
    """The CLI's message for `--set FIELD=TEXT`, after 'FIELD: '."""
    done = CliRunner().invoke(cli_app, ["screen", "--set", f"{field}={text}"])
    assert done.exit_code == 2, done.output
    line = done.output.strip().splitlines()[-1]
    prefix = f"{field}: "
    assert prefix in line, line
    return line.split(prefix, 1)[1]


# --- step one ------------------------------------------------------------------------------------


def test_step_one_asks_the_starting_facts_with_the_dictionary_values(client: TestClient) -> None:
    page = Page(client.get("/").text)
    assert page.fields_in("answers") == list(START_FIELDS)
    schema = Case.model_json_schema()["properties"]
    for name in START_FIELDS:
        spec = FIELDS_BY_NAME[name]
        (control,) = page.named(name)
        if spec.type is FieldType.enum:
            assert control["tag"] == "select"
            # "not known" first, then the values ("unknown" is that same choice: offered once)
            assert control["options"] == ["", *(v for v in spec.values if v != "unknown")]
            enum = next(item["enum"] for item in schema[name]["anyOf"] if "enum" in item)
            assert control["options"][1:] == [v for v in enum if v != "unknown"]  # as the schema
            assert page.value_of(name) == ""  # "not known" until the clinician chooses
        else:
            assert control["tag"] == "input"
            assert control["value"] == ""
            block = page.field_block(name)
            assert spec.expected() in block  # kind, range and unit beside the field
            bounds = next(item for item in schema[name]["anyOf"] if "minimum" in item)
            assert f"from {int(bounds['minimum'])} to {int(bounds['maximum'])}" in block


def test_site_profile_is_shown_as_assumptions(client: TestClient, bare_client: TestClient) -> None:
    site_section = re.search(r'<section id="site".*?</section>', client.get("/").text, re.DOTALL)
    assert site_section
    for name, value in SCREENER.site.items():
        words = {True: "yes", False: "no"}.get(value, str(value))  # type: ignore[call-overload]
        assert re.search(rf"<code>{name}</code>: {words}</li>", site_section.group(0)), name
    bare = client.get("/").text != bare_client.get("/").text
    assert bare
    assert "started without a site profile" in bare_client.get("/").text
    # a screened case lists what it assumed from the site, too
    screened = post(client, DISC).text
    assert "(from the site profile)" in screened


def test_every_page_says_it_is_a_screening_aid(client: TestClient) -> None:
    pages = [
        client.get("/").text,
        post(client, DISC).text,
        post(client, {**DISC, "age_years": "130"}).text,
        post(client, {**DISC, "cauda_equina_syndrome": "true"}, "/report").text,
    ]
    for html in pages:
        assert DISCLAIMER.replace("'", "&#39;") in html or DISCLAIMER in html
    for html in pages[:3]:
        assert "never an order to operate" in html


# --- questions -----------------------------------------------------------------------------------


def test_only_the_questions_that_can_change_the_verdict_are_asked_in_rank_order(
    client: TestClient,
) -> None:
    result = screen_of(DISC)
    page = Page(post(client, DISC).text)
    asked = page.fields_in("questions")
    assert result.deciding_questions  # a bare clinic case is not settled
    assert asked == asked_fields(SCREENER, result.deciding_questions, {})
    # the cautions not yet excluded: asked in their own section, after the deciding questions
    cautions = page.fields_in("open-cautions")
    caution_fields = {m for c in result.open_cautions for m in c.missing}
    assert cautions
    assert set(cautions) == caution_fields - set(asked)
    # details that cannot change the verdict: offered apart, collapsed
    details = page.fields_in("details")
    open_fields = {m for item in result.not_evaluable for m in item.missing}
    assert set(details) == open_fields - set(result.next_questions) - caution_fields
    assert all(c["in_details"] for c in page.controls if c["section"] == "details")
    assert not set(asked) & set(details)


def test_booleans_are_tri_state_and_never_default_to_no(client: TestClient) -> None:
    page = Page(post(client, DISC).text)
    booleans = [
        n
        for n in page.fields_in("questions") + page.fields_in("details")
        if FIELDS_BY_NAME[n].type is FieldType.boolean
    ]
    assert "cauda_equina_syndrome" in booleans
    for name in booleans:
        radios = page.named(name)
        assert [r["value"] for r in radios] == ["true", "false", ""]
        assert page.value_of(name) == ""  # "not known" is what is chosen until answered
        assert all(r["wrapped"] for r in radios)  # each radio has its label
    assert not page.radios_outside_fieldset
    assert page.fieldsets_without_legend == 0


def test_not_known_stays_an_open_question_and_no_is_an_answer(client: TestClient) -> None:
    unknown = Page(post(client, {**DISC, "cauda_equina_syndrome": ""}).text)
    assert "cauda_equina_syndrome" in unknown.fields_in("questions")
    answered = Page(post(client, {**DISC, "cauda_equina_syndrome": "false"}).text)
    assert "cauda_equina_syndrome" not in answered.fields_in("questions")
    assert "cauda_equina_syndrome" in answered.fields_in("answers")
    assert answered.value_of("cauda_equina_syndrome") == "false"


def test_every_answer_is_kept_visible_and_editable(client: TestClient) -> None:
    answers = {**DISC, "cauda_equina_syndrome": "false", "bmi": "31.5", "smoker": "true"}
    page = Page(post(client, answers).text)
    kept = page.fields_in("answers")
    for name, text in answers.items():
        assert name in kept
        assert page.value_of(name) == text
    # and once more: what the page posts back is the same case
    again = {n: page.value_of(n) or "" for n in kept}
    assert screen_of(again).model_dump() == screen_of(answers).model_dump()


def test_a_settled_case_says_the_verdict_can_no_longer_change(client: TestClient) -> None:
    answers = {**DISC, **DISC_ANSWERS}
    result = screen_of(answers)
    assert len(result.possible_verdicts) == 1
    assert not result.next_questions
    html = post(client, answers).text
    page = Page(html)
    assert 'id="decided"' in html
    assert "The verdict can no longer change" in html
    assert page.fields_in("questions") == []
    assert f"<code>{result.verdict.value}</code>" in html
    assert 'formaction="/report"' in html
    assert 'formaction="/result.json"' in html
    # a case still open says which verdicts are still possible instead
    open_html = post(client, DISC).text
    assert 'id="decided"' not in open_html
    assert 'id="possible"' in open_html


def test_with_only_cautions_open_the_form_says_the_verdict_is_given(client: TestClient) -> None:
    """Red flags answered, a caution open (revision surgery, BMI): the verdict is given and the
    form says so; the cautions are asked in their own section, no longer as deciding questions."""
    answers = {**DISC, "cauda_equina_syndrome": "false", "progressive_neuro_deficit": "false"}
    result = screen_of(answers)
    assert result.deciding_questions == []
    assert result.open_cautions
    html = post(client, answers).text
    page = Page(html)
    assert 'id="given"' in html
    assert 'id="decided"' not in html
    assert page.fields_in("questions") == []
    assert set(page.fields_in("open-cautions")) == {
        m for c in result.open_cautions for m in c.missing
    }


def test_cauda_equina_is_urgent_review_at_once(client: TestClient) -> None:
    html = post(client, {**DISC, "cauda_equina_syndrome": "true"}).text
    assert "<code>urgent_review</code>" in html
    assert 'id="decided"' in html
    assert Page(html).fields_in("questions") == []


def test_a_site_setting_among_the_questions_says_so(bare_client: TestClient) -> None:
    result = screen_of(DISC, BARE)
    settings = [n for n in result.next_questions if FIELDS_BY_NAME[n].group.value == "setting"]
    assert settings  # without a site profile, equipment is asked
    html = post(bare_client, DISC).text
    assert 'id="settings-note"' in html
    assert "--site FILE" in html


def test_a_derived_attribute_is_asked_as_its_inputs() -> None:
    asked = asked_fields(SCREENER, ["pi_ll_mismatch_deg", "bmi"], {"lumbar_lordosis_deg": 40})
    assert asked == ["pelvic_incidence_deg", "bmi"]


def test_findings_are_one_line_with_details_expandable(client: TestClient) -> None:
    answers = {**DISC, **DISC_ANSWERS, "diabetes": "true", "bmi": "41"}
    result = screen_of(answers)
    assert result.findings
    html = post(client, answers).text
    for finding in result.findings:
        match = re.search(
            rf'<li class="finding" data-rule="{finding.rule_id}"><details>\s*'
            r"<summary>(.*?)</summary>",
            html,
            re.DOTALL,
        )
        assert match, finding.rule_id
        assert "\n" not in match.group(1).strip()
        assert finding.rule_id in match.group(1)


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "text"),
    [("age_years", "130"), ("bmi", "2.5"), ("levels", "1.5"), ("age_years", "abc")],
)
def test_bad_input_is_shown_beside_its_field_in_the_cli_words(
    client: TestClient, field: str, text: str
) -> None:
    response = post(client, {**DISC, field: text})
    assert response.status_code == 422
    page = Page(response.text)
    message = cli_message(field, text)
    block = page.field_block(field)
    assert f'class="error" id="f-{field}-error">{message}</p>' in block.replace("&#39;", "'")
    assert 'aria-invalid="true"' in block
    assert f'href="#f-{field}"' in response.text  # the summary links to it
    # the other answers are kept; the bad value only when it cannot identify anyone
    assert page.value_of("diagnosis") == "disc_herniation"
    if "withheld" in message:
        assert page.value_of(field) == ""
    else:
        assert page.value_of(field) == text


def test_a_contradiction_is_named_beside_the_field(client: TestClient) -> None:
    response = post(client, {**DISC, "region": "cervical"})
    assert response.status_code == 422
    block = Page(response.text).field_block("region")
    assert "region-follows-lowest-level" in block
    assert "lowest_level is L4-L5" in block


@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("age_years", "John Smith"),
        ("bmi", "555-867-5309"),
        ("levels", "1961-04-12"),
        ("diagnosis", "<script>alert(1)</script>"),
        ("lowest_level", "jane.doe@example.org"),
        ("patient_name", "Mary Major"),
    ],
)
def test_no_value_that_could_identify_someone_is_echoed(
    client: TestClient, field: str, text: str
) -> None:
    response = post(client, {**DISC, field: text})
    assert response.status_code == 422
    assert text not in response.text
    assert text.replace("<", "&lt;").replace(">", "&gt;") not in response.text
    assert "withheld" in response.text or "unknown field" in response.text


@pytest.mark.hostile
@pytest.mark.parametrize(
    "name", ["mrn0012345", "john_smith", "patient_name", "age_years1961", "Mary Major", "nhs_no"]
)
def test_an_unknown_field_name_that_could_be_data_is_never_echoed(
    client: TestClient, name: str
) -> None:
    """A hand-made post's field names may be values (issue 26: `mrn0012345` was echoed)."""
    response = post(client, {**DISC, name: "1"})
    assert response.status_code == 422
    assert name not in response.text
    assert name.replace(" ", "+") not in response.text
    assert "unknown field (name withheld: it may be data)" in response.text
    assert "Your answers" in response.text  # the page, with the answers kept
    assert Page(response.text).value_of("diagnosis") == "disc_herniation"


def test_an_unknown_field_name_close_to_a_field_is_shown_with_the_hint(
    client: TestClient,
) -> None:
    response = post(client, {**DISC, "slip_pct": "20", "mrn0012345": "1", "x99": "2"})
    assert response.status_code == 422
    text = response.text.replace("&#39;", "'")
    assert "unknown field 'slip_pct'; did you mean 'slip_percent'?" in text
    assert "2 unknown fields (names withheld: they may be data)" in text
    assert "mrn0012345" not in text


def test_a_field_given_twice_is_refused_never_the_last_one_wins(client: TestClient) -> None:
    body = "&".join(f"{k}={v}" for k, v in DISC.items())
    body += "&cauda_equina_syndrome=true&cauda_equina_syndrome=false"
    response = client.post(
        "/", content=body, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 422
    assert "given more than once" in Page(response.text).field_block("cauda_equina_syndrome")


def test_numbers_are_read_as_decimals_never_octal(client: TestClient) -> None:
    page = Page(post(client, {**DISC, "age_years": "045"}).text)
    assert page.value_of("age_years") == "45"


def test_no_identifier_is_asked_and_the_case_id_is_fixed(client: TestClient) -> None:
    page = Page(client.get("/").text)
    assert "case_id" not in {c.get("name") for c in page.controls}
    data = json.loads(post(client, {**DISC, "case_id": "Smith-1961"}, "/result.json").text)
    assert data["case_id"] == CASE_ID


# --- report and JSON -----------------------------------------------------------------------------


def test_report_and_json_are_the_same_answers_screened(client: TestClient) -> None:
    answers = {**DISC, **DISC_ANSWERS}
    expected = screen_of(answers)
    data = post(client, answers, "/result.json")
    assert data.status_code == 200
    assert data.headers["content-type"].startswith("application/json")
    assert json.loads(data.text) == json.loads(expected.model_dump_json())
    report = post(client, answers, "/report")
    assert report.status_code == 200
    assert f'Case <span id="case-id">{CASE_ID}</span>' in report.text
    assert f"({expected.verdict.value})" in report.text
    assert "<script" not in report.text
    # its inline style is allowed by its hash, nothing else
    style = re.search(r"<style>(.*?)</style>", report.text, re.DOTALL)
    assert style
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    policy = report.headers["content-security-policy"]
    assert f"style-src 'sha256-{digest}'" in policy
    assert "default-src 'none'" in policy
    # bad answers give the form back with the error, not a report
    bad = post(client, {**answers, "bmi": "900"}, "/report")
    assert bad.status_code == 422
    assert 'id="f-bmi-error"' in bad.text


# --- headers, cookies, markup --------------------------------------------------------------------


def test_security_headers_and_no_cookies_on_every_response(client: TestClient) -> None:
    responses = [
        client.get("/"),
        client.get("/static/form.css"),
        post(client, DISC),
        post(client, {**DISC, "age_years": "abc"}),
        post(client, DISC, "/report"),
        post(client, DISC, "/result.json"),
    ]
    for response in responses:
        assert "set-cookie" not in response.headers
        assert response.headers["cache-control"] == "no-store"
        policy = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy
        assert "'unsafe-inline'" not in policy
        assert "unsafe-eval" not in policy
        assert response.headers["x-content-type-options"] == "nosniff"
    for response in responses[:1] + responses[2:4]:
        assert response.headers["content-security-policy"].startswith("default-src 'self'")
        assert "<script" not in response.text
        assert " style=" not in response.text
        assert "<style" not in response.text
    assert not client.cookies


def test_the_page_is_accessible_in_its_markup(client: TestClient) -> None:
    for html in (
        client.get("/").text,
        post(client, DISC).text,
        post(client, {**DISC, "bmi": "x"}).text,
    ):
        assert '<html lang="en">' in html
        assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
        page = Page(html)
        for control in page.controls:
            if control.get("type") == "radio":
                assert control["wrapped"]
            else:
                assert control["id"] in page.label_for, control["name"]
        ids = re.findall(r'\sid="([^"]+)"', html)
        assert len(ids) == len(set(ids))  # unique ids
        for described in re.findall(r'aria-describedby="([^"]+)"', html):
            for ref in described.split():
                assert ref in ids
        # the default button (Enter) screens; the report is never the first submit button
        first = re.search(r"<button[^>]*>", html)
        assert first
        assert "formaction" not in first.group(0)


def test_hostile_posts_are_refused_without_echo_or_crash(client: TestClient) -> None:
    huge = post(client, {**DISC, "bmi": "9" * 1_000_000})
    assert huge.status_code == 422
    assert "withheld" in Page(huge.text).field_block("bmi")
    assert len(huge.text) < 50_000  # the value is not sent back
    crowded = post(client, {f"x{i}": "1" for i in range(300)})
    assert crowded.status_code == 400  # more fields than the dictionary holds: not this form
    binary = client.post(
        "/", content=b"\xff\xfe=\x00", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert binary.status_code == 422
    assert "\x00" not in binary.text


def test_development_mode_says_so_on_every_page() -> None:
    dev = TestClient(create_app(ServiceConfig(screener=SCREENER, dev=True)))
    for response in (dev.get("/"), post(dev, DISC), post(dev, {**DISC, "bmi": "0"})):
        assert 'id="dev-mode"' in response.text
    plain = TestClient(create_app(ServiceConfig(screener=SCREENER)))
    assert 'id="dev-mode"' not in plain.get("/").text


def test_why_a_question_is_asked_comes_from_the_rule_file(client: TestClient) -> None:
    """'Why this is asked' under a question is the rule's `asks_because` (rules/**), never its
    message where it has one; the field's label and question are the data dictionary's."""
    html = post(client, DISC).text
    page = Page(html)
    assert "cauda_equina_syndrome" in page.fields_in("questions")
    rule = SCREENER.ruleset.by_id["RED-001"].meta
    assert rule.asks_because
    assert f"red flag RED-001: {rule.asks_because}" in html
    assert rule.message not in html
    spec = FIELDS_BY_NAME["cauda_equina_syndrome"]
    assert f"{spec.label} <code>cauda_equina_syndrome</code>" in html
    assert f'id="f-cauda_equina_syndrome-question">{spec.question}</p>' in html
    assert 'aria-describedby="f-cauda_equina_syndrome-question' in html


def test_the_form_says_verdicts_in_their_own_words(client: TestClient) -> None:
    """Headings and the verdicts still possible keep the verdict's wording ('MIS worth
    discussing'), never a code with its underscores replaced ('worth discussing')."""
    from engine.report.text import VERDICT_WORDS
    from engine.report.words import verdicts_words

    result = screen_of(DISC)
    html = post(client, DISC).text
    possible = re.search(r'id="possible">Verdicts still possible: (.*?)\.</p>', html)
    assert possible is not None
    assert possible.group(1) == verdicts_words(result.possible_verdicts) + (
        "" if result.possible_verdicts_exact else " (perhaps not all of them)"
    )
    answered = post(client, {**DISC, **DISC_ANSWERS}).text
    settled = screen_of({**DISC, **DISC_ANSWERS})
    assert f'<span class="word">{VERDICT_WORDS[settled.verdict][0]}</span>' in answered
