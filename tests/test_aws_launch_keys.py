"""What each aws label and pool key makes of an instance, seen in moto's server: the AMI's
root device, volumes, user data, IMDSv2, IAM profile, EBS optimisation, IPv6, image filters."""

from __future__ import annotations

import base64
import ipaddress
from typing import Any

import boto3
import pytest
from adapter_contract import Loop, context_factory
from plugins.motoaws import REGION, AwsFaults, FaultProxy, provider_config

from nodepool.config import parse_config
from nodepool.drivers import adapter_for
from nodepool.errors import ConfigurationError

XVDA_AMI = "ami-760aaa0f"   # moto's Amazon Linux AMI: its root device is /dev/xvda


def configured(network: dict[str, Any], label: str = "", image: str = "",
               pool: str = "") -> Any:
    """The test provider with extra lines in the `small` label, its cloud-image, its pool."""
    text = provider_config(network, extra_pool=pool)
    text = text.replace("            volume-size: 20\n", f"            volume-size: 20\n{label}", 1)
    if image:
        text = text.replace("        image-id: ami-12c6146b\n", image, 1)
    return parse_config(text).providers["ec2-test"]


def launch(provider: Any, proxy: FaultProxy, ec2: Any, network: dict[str, Any]) -> dict:
    """Launch one `small` node through the state machine; the instance moto made."""
    run = Loop(adapter_for(provider), AwsFaults(proxy, ec2, provider.name, network)).create(
        context_factory(provider)())
    assert run.complete, run.describe()
    (reservation,) = ec2.describe_instances(InstanceIds=[run.external_id])["Reservations"]
    return reservation["Instances"][0]


def root_volume(ec2: Any, instance: dict) -> tuple[str, dict]:
    (mapping,) = instance["BlockDeviceMappings"]
    (volume,) = ec2.describe_volumes(VolumeIds=[mapping["Ebs"]["VolumeId"]])["Volumes"]
    assert mapping["Ebs"]["DeleteOnTermination"] is True
    return mapping["DeviceName"], volume


def test_root_volume_uses_the_amis_root_device_name(aws_network: dict, aws_proxy: FaultProxy,
                                                    ec2: Any) -> None:
    value = configured(aws_network, image=f"        image-id: {XVDA_AMI}\n")
    first = launch(value, aws_proxy, ec2, aws_network)
    device, volume = root_volume(ec2, first)
    assert device == "/dev/xvda" and volume["Size"] == 20   # one volume: no stray /dev/sda1


def test_the_ami_is_described_once_per_adapter(aws_network: dict, aws_proxy: FaultProxy,
                                               ec2: Any) -> None:
    value = configured(aws_network, image=f"        image-id: {XVDA_AMI}\n")
    adapter = adapter_for(value)
    loop = Loop(adapter, AwsFaults(aws_proxy, ec2, value.name, aws_network))
    make = context_factory(value)
    for _ in range(2):
        assert loop.create(make()).complete
    assert aws_proxy.calls["DescribeImages"] == 1


def test_an_ami_with_the_sda1_root_keeps_it(aws_provider: Any, aws_proxy: FaultProxy,
                                            ec2: Any, aws_network: dict) -> None:
    device, volume = root_volume(ec2, launch(aws_provider, aws_proxy, ec2, aws_network))
    assert device == "/dev/sda1" and volume["Size"] == 20


def test_volume_type_and_iops_reach_the_root_volume(aws_network: dict, aws_proxy: FaultProxy,
                                                    ec2: Any) -> None:
    value = configured(aws_network, label="            volume-type: gp3\n"
                       "            iops: 4000\n            throughput: 250\n")
    _, volume = root_volume(ec2, launch(value, aws_proxy, ec2, aws_network))
    assert (volume["VolumeType"], volume["Size"]) == ("gp3", 20)
    # moto keeps neither iops nor throughput of a mapping: the request must carry them
    sent = aws_proxy.params["RunInstances"]
    assert (sent["BlockDeviceMapping.1.Ebs.Iops"],
            sent["BlockDeviceMapping.1.Ebs.Throughput"]) == ("4000", "250")


def test_volume_keys_on_an_ami_without_an_ebs_root_are_a_configuration_error(
        aws_network: dict, aws_proxy: FaultProxy, ec2: Any) -> None:
    value = configured(aws_network, image="        image-id: ami-04681a1dbd79675b6\n")
    machine = adapter_for(value).create(context_factory(value)())
    with pytest.raises(ConfigurationError, match="no EBS root volume.*volume-"):
        for _ in range(3):
            machine.advance(None)


def test_userdata_reaches_the_instance_as_written(aws_network: dict, aws_proxy: FaultProxy,
                                                  ec2: Any) -> None:
    value = configured(aws_network, label="            userdata: |\n"
                       "              #cloud-config\n              runcmd: [true]\n")
    instance = launch(value, aws_proxy, ec2, aws_network)
    answer = ec2.describe_instance_attribute(InstanceId=instance["InstanceId"],
                                             Attribute="userData")
    # EC2 returns user data base64-encoded, once: what the instance's cloud-init reads
    assert base64.b64decode(answer["UserData"]["Value"]).decode() == \
        "#cloud-config\nruncmd: [true]\n"


@pytest.mark.parametrize("mode", ["required", "optional"])
def test_imdsv2_sets_the_metadata_tokens(aws_network: dict, aws_proxy: FaultProxy, ec2: Any,
                                         mode: str) -> None:
    value = configured(aws_network, label=f"            imdsv2: {mode}\n")
    options = launch(value, aws_proxy, ec2, aws_network)["MetadataOptions"]
    assert (options["HttpTokens"], options["HttpEndpoint"]) == (mode, "enabled")


@pytest.mark.parametrize("key", ["name", "arn"])
def test_iam_instance_profile_by_name_or_arn(aws_network: dict, aws_proxy: FaultProxy,
                                             ec2: Any, moto_server: str, key: str) -> None:
    iam = boto3.client("iam", endpoint_url=moto_server, region_name=REGION)
    arn = iam.create_instance_profile(InstanceProfileName="np-nodes")["InstanceProfile"]["Arn"]
    ref = "np-nodes" if key == "name" else arn
    value = configured(aws_network, label=f"            iam-instance-profile:\n"
                       f"              {key}: {ref}\n")
    assert launch(value, aws_proxy, ec2, aws_network)["IamInstanceProfile"]["Arn"] == arn


def test_ebs_optimized(aws_network: dict, aws_proxy: FaultProxy, ec2: Any) -> None:
    value = configured(aws_network, label="            ebs-optimized: true\n")
    assert launch(value, aws_proxy, ec2, aws_network)["EbsOptimized"] is True
    assert launch(configured(aws_network), aws_proxy, ec2, aws_network)["EbsOptimized"] is False


def test_image_filters_pick_the_matching_ami(aws_network: dict, aws_proxy: FaultProxy,
                                             ec2: Any) -> None:
    # (moto gives its AMIs one creation date: "the newest of several" is not testable here)
    value = configured(aws_network, image="        image-filters:\n"
                       "          - name: name\n            values: [amzn-ami-hvm-2017.09.1.*]\n"
                       "          - name: root-device-type\n            values: [ebs]\n")
    assert launch(value, aws_proxy, ec2, aws_network)["ImageId"] == XVDA_AMI


def test_image_filters_matching_nothing_is_a_configuration_error(
        aws_network: dict, aws_proxy: FaultProxy, ec2: Any) -> None:
    value = configured(aws_network, image="        image-filters:\n"
                       "          - name: name\n            values: [no-such-image-*]\n")
    machine = adapter_for(value).create(context_factory(value)())
    with pytest.raises(ConfigurationError, match="no AMI matches its image-filters"):
        machine.advance(None)


def test_public_ipv6_gives_the_node_an_ipv6_address(aws_network: dict, aws_proxy: FaultProxy,
                                                    ec2: Any) -> None:
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16", AmazonProvidedIpv6CidrBlock=True)["Vpc"]
    (block,) = ec2.describe_vpcs(VpcIds=[vpc["VpcId"]])["Vpcs"][0]["Ipv6CidrBlockAssociationSet"]
    prefix = block["Ipv6CidrBlock"].split("::")[0]
    subnet = ec2.create_subnet(VpcId=vpc["VpcId"], CidrBlock="10.20.1.0/24",
                               Ipv6CidrBlock=f"{prefix}::/64",
                               AvailabilityZone=f"{REGION}a")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="np6", Description="np6",
                                      VpcId=vpc["VpcId"])["GroupId"]
    network = {"vpc": vpc["VpcId"], "subnets": [subnet], "group": group}
    value = configured(network, pool="        public-ipv6: true\n")
    aws_proxy.hang_next_run = True    # pending until the address is there
    loop = Loop(adapter_for(value), AwsFaults(aws_proxy, ec2, value.name, network))
    run = loop.create(context_factory(value)(), max_ticks=1)
    for _ in range(50):   # tick by tick until the instance is made (a tick may be retried)
        if run.machine.external_id or run.done:
            break
        loop.drive([run], max_ticks=1)
    assert run.machine.external_id and not run.complete, run.describe()
    # AWS honours the interface's Ipv6AddressCount; moto reads only an instance-level one
    # (which AWS refuses beside NetworkInterfaces), so the address is assigned as AWS would
    assert aws_proxy.params["RunInstances"]["NetworkInterface.1.Ipv6AddressCount"] == "1"
    (reservation,) = ec2.describe_instances(InstanceIds=[run.machine.external_id])["Reservations"]
    eni = reservation["Instances"][0]["NetworkInterfaces"][0]["NetworkInterfaceId"]
    ec2.assign_ipv6_addresses(NetworkInterfaceId=eni, Ipv6AddressCount=1)
    aws_proxy.hung.clear()
    loop.drive([run])
    assert run.complete, run.describe()
    ipv6 = run.machine.instance.public_ipv6
    # compared as addresses: moto may write the block with a leading zero ("07e6") that
    # the address it draws from it drops ("7e6")
    assert ipv6 and ipaddress.ip_address(ipv6) in ipaddress.ip_network(f"{prefix}::/64"), \
        run.machine.instance
