"""The Caffe schema: caffe.proto, its compiled descriptor (caffe.desc), the protobuf message
classes made from it (`schema.message_class`) and typed views of them for mypy (`caffe_types`).

The bottom floor: the readers (frontend), the layer library and any other Caffe reader share
it and import nothing else of protocaffe from it.
"""
