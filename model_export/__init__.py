"""Model-export tooling: the CNN exported once to ONNX (fp32, or int8 after quantization-aware fine-tuning
and static quantization), its content identity, and the machine's cache of exported models. Runs on the
Airflow worker (staging) and on developer machines; never staged to EMR."""
