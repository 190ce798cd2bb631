"""Drives the coordinator's OpenAI-compatible front with the official `openai` package.

Run by OpenAIFrontTests.swift:

    openai_client.py <base url, …/v1> <chat model> <embedding model> [<catalog model>]

The token comes from the environment (SWITCHYARD_TEST_TOKEN), never from the command line. Every
check is recorded in a JSON summary printed as the last line of stdout; the Swift test asserts
on it. An unexpected exception ends the script with status 1 (its traceback on stderr).
"""

import json
import os
import sys
import traceback

import openai


def error_info(error):
    """What an APIStatusError says: status, code, param and message."""
    body = error.body if isinstance(error.body, dict) else {}
    return {
        "class": type(error).__name__,
        "status": getattr(error, "status_code", None),
        "code": body.get("code"),
        "param": body.get("param"),
        "type": body.get("type"),
        "message": body.get("message") or str(error),
    }


def expect_error(call):
    """Runs `call`, which must raise an OpenAI error: its details, or a note that it did not raise."""
    try:
        call()
    except openai.APIStatusError as error:
        return error_info(error)
    return {"class": None, "note": "no error was raised"}


def main():
    base_url, chat_model, embedding_model = sys.argv[1:4]
    catalog_model = sys.argv[4] if len(sys.argv) > 4 else None
    token = os.environ["SWITCHYARD_TEST_TOKEN"]
    # No retries: every answer the summary records is the first one.
    client = openai.OpenAI(base_url=base_url, api_key=token, max_retries=0, timeout=120)
    summary = {"openai_version": openai.__version__}

    models = client.models.list()
    summary["models"] = sorted(model.id for model in models.data)
    summary["models_object"] = [model.object for model in models.data]
    summary["model_retrieved"] = client.models.retrieve(chat_model).id

    messages = [{"role": "user", "content": "Say hello."}]
    chat = client.chat.completions.create(model=chat_model, messages=messages, max_tokens=8, temperature=0)
    summary["chat"] = {
        "id": chat.id,
        "object": chat.object,
        "model": chat.model,
        "created": chat.created,
        "choices": len(chat.choices),
        "role": chat.choices[0].message.role,
        "content": chat.choices[0].message.content,
        "finish_reason": chat.choices[0].finish_reason,
        "usage": chat.usage.model_dump() if chat.usage else None,
    }

    # The system prompt as a developer message and content as text parts: translated, not refused.
    parts = client.chat.completions.create(
        model=chat_model,
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Say"}, {"type": "text", "text": "hello."}]},
        ],
        max_completion_tokens=4,
        temperature=0,
    )
    summary["parts_content"] = parts.choices[0].message.content

    chunks = list(
        client.chat.completions.create(
            model=chat_model,
            messages=messages,
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    with_choices = [chunk for chunk in chunks if chunk.choices]
    summary["stream"] = {
        "chunks": len(chunks),
        "objects": sorted({chunk.object for chunk in chunks}),
        "ids": sorted({chunk.id for chunk in chunks}),
        "first_role": with_choices[0].choices[0].delta.role if with_choices else None,
        "content": "".join(chunk.choices[0].delta.content or "" for chunk in with_choices),
        "finish_reasons": [chunk.choices[0].finish_reason for chunk in with_choices if chunk.choices[0].finish_reason],
        "usage_last": chunks[-1].usage.model_dump() if chunks and chunks[-1].usage else None,
        "last_has_choices": bool(chunks[-1].choices) if chunks else None,
    }

    completion = client.completions.create(model=chat_model, prompt="Once upon a time", max_tokens=6, temperature=0)
    summary["completion"] = {
        "id": completion.id,
        "object": completion.object,
        "text": completion.choices[0].text,
        "finish_reason": completion.choices[0].finish_reason,
        "usage": completion.usage.model_dump() if completion.usage else None,
    }
    streamed = list(client.completions.create(model=chat_model, prompt="Once upon a time", max_tokens=6, temperature=0, stream=True))
    summary["completion_stream"] = "".join(chunk.choices[0].text for chunk in streamed if chunk.choices)

    try:
        # The package asks for base64 unless told otherwise, and decodes it.
        embedded = client.embeddings.create(model=embedding_model, input=["first", "second text"])
        floats = client.embeddings.create(model=embedding_model, input="first", encoding_format="float")
        summary["embeddings"] = {
            "count": len(embedded.data),
            "indexes": [item.index for item in embedded.data],
            "dimensions": [len(item.embedding) for item in embedded.data],
            "first_matches_float": max(abs(a - b) for a, b in zip(embedded.data[0].embedding, floats.data[0].embedding)) < 1e-5,
            "usage": embedded.usage.model_dump() if embedded.usage else None,
        }
    except openai.APIStatusError as error:
        summary["embeddings"] = {"error": error_info(error)}

    wrong = openai.OpenAI(base_url=base_url, api_key="wrong-" + "x" * 26, max_retries=0, timeout=60)
    summary["wrong_key"] = expect_error(lambda: wrong.chat.completions.create(model=chat_model, messages=messages, max_tokens=2))
    summary["unknown_model"] = expect_error(
        lambda: client.chat.completions.create(model="no-such-model", messages=messages, max_tokens=2)
    )
    summary["bad_temperature"] = expect_error(
        lambda: client.chat.completions.create(model=chat_model, messages=messages, max_tokens=2, temperature=5)
    )
    summary["tools"] = expect_error(
        lambda: client.chat.completions.create(
            model=chat_model,
            messages=messages,
            max_tokens=2,
            tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}],
        )
    )
    summary["two_choices"] = expect_error(lambda: client.chat.completions.create(model=chat_model, messages=messages, max_tokens=2, n=2))
    summary["image_part"] = expect_error(
        lambda: client.chat.completions.create(
            model=chat_model,
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://example.invalid/a.png"}}]}],
            max_tokens=2,
        )
    )
    if catalog_model:
        summary["catalog_model_listed"] = catalog_model in summary["models"]

    print(json.dumps(summary))


if __name__ == "__main__":
    try:
        main()
    except Exception:  # noqa: BLE001 - the traceback is the report
        traceback.print_exc()
        sys.exit(1)
